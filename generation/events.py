"""The task events each user's stream sends (GET /api/v1/events): written here, and only here.

A row of `TaskEvent` is written in the transaction of the change it tells of
(generation.transitions calls the `task_*` functions below inside its own atomic block),
so an event exists if and only if its change was committed. On PostgreSQL a `NOTIFY
easel_events` follows the commit (`_send_notify` says why not inside it): each web
process's one listening connection wakes and reads the new rows once for all of its
streams (generation.api.event_hub). On SQLite that process polls instead, one query a tick.

Progress and preview frames are "how far" events: the pump's progress flush calls
`tasks_progressed` once per interval for all the tasks it wrote (one SELECT, one INSERT),
only for tasks whose numbers or frame changed since the last write; they are pruned after
a minute or two. The others (created, queued, started and the three endings) are kept for
EASEL_EVENTS_KEEP_SECONDS, so a client that reconnects with Last-Event-ID within that
time never misses how its task ended.

Payloads hold ids and paths, never bytes; paths are made absolute, and messages put in the
reader's language, by the stream when it sends them.
"""
from __future__ import annotations

import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from config.prepared import PreparedInsert

from .representation import ImageSerializer
from .models import DURABLE_EVENT_KINDS, GeneratedImage, GenerationTask, TaskEvent, TaskEventKind, TaskStatus

CHANNEL = "easel_events"
# How long the "how far" events are kept: a reconnect only needs the latest.
TRANSIENT_KEEP = timedelta(minutes=1)


def _notify() -> None:
    """Wake the listeners once the caller's transaction has committed (never on rollback),
    once per transaction however many events it wrote."""
    if connection.vendor != "postgresql":
        return
    if connection.in_atomic_block and any(func is _send_notify for _sids, func, *_rest in connection.run_on_commit):
        return
    # Robust: the change is committed by now; a wake the database refuses (a cut
    # connection) is logged, never the caller's error, and the hub's periodic read makes
    # it up. The commit's other hooks (a new task's dispatch) still run.
    transaction.on_commit(_send_notify, robust=True)


def _send_notify() -> None:
    # A transaction of its own, after the change's commit. PostgreSQL serializes every
    # committing transaction that notified on one lock, held through the commit's WAL
    # flush: a NOTIFY inside each change made the changes of all processes commit one
    # at a time (under a burst of creates, half the samples of pg_stat_activity were a
    # COMMIT waiting on that lock). This one commits without waiting for the flush
    # (synchronous_commit off for it alone), so the lock is held for a moment; the change
    # itself was flushed by its own commit, and a wake lost in a crash is made up by the
    # hub's periodic read.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, '')", [CHANNEL])


def _user_id(task) -> int:
    if isinstance(task, GenerationTask):
        return task.user_id
    return GenerationTask.objects.filter(pk=task).values_list("user_id", flat=True).get()


def _task_id(task) -> int:
    return task if isinstance(task, int) else task.pk


# Written for every change of every task: the INSERT is written once (config.prepared),
# no model instance is built, no id read back.
_INSERT = PreparedInsert(TaskEvent, ("user_id", "task_id", "kind", "data", "created_at"))


def _record(task, kind: str, **data) -> None:
    task_id = _task_id(task)
    _INSERT.run([(_user_id(task), task_id, kind, {"task_id": task_id, **data}, timezone.now())])
    _notify()


# --- the named changes (called by generation.transitions, in their transactions) --------


def task_created(task: GenerationTask) -> None:
    """A new task waits in Easel's queue (the stream adds its place in the queue)."""
    now = timezone.now()
    _INSERT.run([
        (task.user_id, task.pk, TaskEventKind.CREATED,
         {"task_id": task.pk, "status": TaskStatus.PENDING, "prompt": task.prompt, "model_name": task.model_name}, now),
        (task.user_id, task.pk, TaskEventKind.QUEUED, {"task_id": task.pk, "status": TaskStatus.PENDING}, now),
    ])
    _notify()


def task_queued(task) -> None:
    """Back in Easel's queue: retried, or moved off a backend that went away."""
    _record(task, TaskEventKind.QUEUED, status=TaskStatus.PENDING)


def task_started(task) -> None:
    _record(task, TaskEventKind.STARTED, status=TaskStatus.PROCESSING)


def task_completed(task, images=None) -> None:
    """Completed, with its images as the status endpoint lists them (ids, paths): `images`
    when the caller has the set the task keeps (the runner does), else as stored."""
    if images is None:
        images = GeneratedImage.objects.filter(task_id=_task_id(task)).order_by("index")
    images = sorted(images, key=lambda image: image.index)
    writer = ImageSerializer(context={})
    _record(task, TaskEventKind.COMPLETED, status=TaskStatus.COMPLETED,
            result_id=images[0].pk if images else None,
            images=[writer.to_representation(image) for image in images])


def task_failed(task, *, code: str, values: dict) -> None:
    """Failed: its code and message (the English and the message id, rendered per reader)."""
    _record(task, TaskEventKind.FAILED, status=TaskStatus.FAILED, code=code,
            message=values.get("error_message", ""), message_params=values.get("error_params") or {})


def task_cancelled(task) -> None:
    _record(task, TaskEventKind.CANCELLED, status=TaskStatus.CANCELLED)


# --- progress (called by the worker's progress writers) -------------------------------

# What this process last wrote per task: an unchanged step or frame is not written again.
# Bounded: forgotten when it grows past a few thousand running tasks.
_last_lock = threading.Lock()
_last_progress: dict[int, tuple] = {}
_last_preview: dict[int, object] = {}


def tasks_progressed(task_ids) -> int:
    """The progress (and perhaps a new preview frame) of these tasks was just written:
    one event per change, for running tasks only. One SELECT and at most one INSERT,
    however many tasks; answers the events written."""
    task_ids = list(task_ids)
    if not task_ids:
        return 0
    rows = (GenerationTask.objects.filter(pk__in=task_ids, status=TaskStatus.PROCESSING)
            .values_list("pk", "user_id", "progress_value", "progress_max", "progress_node", "preview__updated_at"))
    events = []
    now = timezone.now()
    with _last_lock:
        if len(_last_progress) > 5000:
            _last_progress.clear()
            _last_preview.clear()
        for pk, user_id, value, maximum, node, frame_at in rows:
            numbers = (value, maximum, node)
            if _last_progress.get(pk) != numbers:
                _last_progress[pk] = numbers
                fraction = round(min(1.0, value / maximum), 4) if maximum else 0.0
                events.append((user_id, pk, TaskEventKind.PROGRESS, {
                    "task_id": pk, "value": value, "max": maximum, "fraction": fraction, "node": node}, now))
            if frame_at is not None and _last_preview.get(pk) != frame_at:
                _last_preview[pk] = frame_at
                version = int(frame_at.timestamp() * 1000)
                events.append((user_id, pk, TaskEventKind.PREVIEW, {
                    "task_id": pk, "url": f"{reverse('api-generation-preview', args=[pk])}?v={version}"}, now))
    if events:
        _INSERT.run(events)
        _notify()
    return len(events)


# --- reading and pruning ---------------------------------------------------------------


def events_for_user(*, user_id: int, after: int, limit: int = 500) -> list[TaskEvent]:
    """A user's events after the id a client last saw, oldest first (the index on (user, id))."""
    return list(TaskEvent.objects.filter(user_id=user_id, id__gt=after).order_by("id")[:limit])


def events_after(*, after: int, limit: int = 1000) -> list[TaskEvent]:
    """Everyone's events after `after`, oldest first: what a web process's hub reads per wake."""
    return list(TaskEvent.objects.filter(id__gt=after).order_by("id")[:limit])


def events_latest_id() -> int:
    return TaskEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_prune(*, now=None) -> int:
    """Drop the events no reconnect needs any more (the studio tick): "how far" events after
    a minute, the others after EASEL_EVENTS_KEEP_SECONDS. Answers the rows deleted."""
    now = now or timezone.now()
    keep = timedelta(seconds=settings.EASEL_EVENTS_KEEP_SECONDS)
    old, _ = TaskEvent.objects.filter(created_at__lt=now - keep).delete()
    transient, _ = (TaskEvent.objects.filter(created_at__lt=now - TRANSIENT_KEEP)
                    .exclude(kind__in=DURABLE_EVENT_KINDS).delete())
    return old + transient
