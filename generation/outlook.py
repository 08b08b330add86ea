"""Where a task stands in the queue and when it should start and finish: what the status
endpoint, the event stream and the pages tell a waiting user ("3rd in line, about 40 s").

The place is the one in the user's view of the dispatcher's fair queue (generation.fleet.
dispatch), not the global order of arrival: higher priority tiers go first, then users take
turns, whoever was served longest ago first. A user's k-th waiting task therefore comes
after their own k-1 earlier ones, after up to k-1 tasks of every other user of the same
tier (k if that user's turn comes first) and after every task of a higher tier.

The times are estimates from measured run times: the mean run (started → completed) per
model and backend over the last week (the hourly rollups), refined by the most recent
completions (rollups are written an hour late). A waiting task starts once the tasks ahead
of it and about half of those running now are through the online backends; it finishes one
mean run of its model later. Without an online backend or any measured run there is no
estimate (null), never a made-up one.

The queue's shape (waiting tasks per user, running tasks, online backends, the means) is a
snapshot each process keeps for EASEL_QUEUE_OUTLOOK_SECONDS: a poll of a waiting task
costs one small count of the user's own tasks on top of it, whatever the queue's length.
Estimates are anchored at the snapshot's time, so polls within one snapshot agree (the
status answer's ETag does not change with every call).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Min, Sum
from django.utils import timezone

from models_catalog.models import ComfyBackend

from .models import ACTIVE_STATUSES, GenerationTask, TaskHourStat, TaskStatus

# The measured runs: the rollups of this long, and this many recent completions on top.
MEAN_WINDOW = timedelta(days=7)
RECENT_RUNS = 200
# Runs of one model on one backend needed before their own mean is trusted over the
# model's across backends (and the model's over everyone's).
TRUSTED_SAMPLES = 3
# A running task is counted as this much of a run still to go.
RUNNING_LEFT = 0.5
# Times are given to this many seconds: closer would be false precision, and an answer
# that changes less often is cheaper to poll (304s).
ROUND_SECONDS = 5


@dataclass
class _Snapshot:
    taken_at: datetime
    expires: float
    backends: int = 0  # online, enabled, not draining
    running: int = 0  # tasks on a backend (assigned or processing)
    # user id → (waiting tasks, priority, last served, oldest waiting id)
    waiting: dict[int, tuple[int, int, datetime | None, int]] = field(default_factory=dict)
    means: dict[tuple[str | None, int | None], float] = field(default_factory=dict)


_snapshot: _Snapshot | None = None
_lock = threading.Lock()


def _means() -> dict[tuple[str | None, int | None], float]:
    """Mean run seconds by (model, backend), (model, None) and (None, None)."""
    totals: dict[tuple[str | None, int | None], list[float]] = {}  # key → [seconds, runs]

    def add(model: str | None, backend: int | None, seconds: float, runs: int) -> None:
        for key in ((model, backend), (model, None), (None, None)):
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += seconds
            entry[1] += runs

    since = timezone.now() - MEAN_WINDOW
    for model, backend, seconds, runs in (
        TaskHourStat.objects.filter(status=TaskStatus.COMPLETED, hour__gte=since, tasks__gt=0)
        .values_list("model_name", "backend_id").annotate(s=Sum("busy_seconds"), n=Sum("tasks"))
    ):
        add(model, backend, seconds or 0.0, runs or 0)
    recent = (GenerationTask.objects.filter(status=TaskStatus.COMPLETED, started_at__isnull=False,
                                            completed_at__isnull=False)
              .order_by("-pk").values_list("model_name", "backend_id", "started_at", "completed_at")[:RECENT_RUNS])
    # The recent runs weigh as much as the whole week: the latest speed matters most.
    fresh: dict[tuple[str | None, int | None], list[float]] = {}
    for model, backend, started, completed in recent:
        seconds = max(0.0, (completed - started).total_seconds())
        for key in ((model, backend), (model, None), (None, None)):
            entry = fresh.setdefault(key, [0.0, 0])
            entry[0] += seconds
            entry[1] += 1
    means = {}
    for key in set(totals) | set(fresh):
        week, latest = totals.get(key), fresh.get(key)
        parts = [entry[0] / entry[1] for entry in (week, latest) if entry and entry[1]]
        samples = sum(entry[1] for entry in (week, latest) if entry)
        if parts and (samples >= TRUSTED_SAMPLES or key == (None, None)):
            means[key] = sum(parts) / len(parts)
    return means


def _take() -> _Snapshot:
    seconds = settings.EASEL_QUEUE_OUTLOOK_SECONDS
    snap = _Snapshot(taken_at=timezone.now(), expires=time.monotonic() + seconds)
    snap.backends = ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False).count()
    snap.running = GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False).count()
    rows = (GenerationTask.objects.filter(status=TaskStatus.PENDING, backend__isnull=True)
            .values_list("user_id").annotate(n=Count("id"), oldest=Min("id")))
    counts = {user_id: (n, oldest) for user_id, n, oldest in rows}
    users = get_user_model().objects.filter(pk__in=list(counts)).values_list("id", "priority", "last_served_at")
    snap.waiting = {pk: (counts[pk][0], priority, served, counts[pk][1]) for pk, priority, served in users}
    snap.means = _means()
    return snap


def snapshot() -> _Snapshot:
    global _snapshot
    with _lock:
        current = _snapshot
    if current is not None and current.expires > time.monotonic():
        return current
    fresh = _take()
    with _lock:
        _snapshot = fresh
    return fresh


def forget() -> None:
    """Take a new snapshot at the next question (tests, after they change the queue)."""
    global _snapshot
    with _lock:
        _snapshot = None


def mean_run_seconds(snap: _Snapshot, model_name: str | None, backend_id: int | None) -> float | None:
    for key in ((model_name, backend_id), (model_name, None), (None, None)):
        if key in snap.means:
            return snap.means[key]
    return None


def _turn_key(served: datetime | None, oldest: int) -> tuple:
    # The dispatcher's rotation order (dispatch.order_key): never served first, then the
    # longest ago, then the oldest waiting task.
    return (served is not None, served or datetime.min.replace(tzinfo=dt_timezone.utc), oldest)


def position(snap: _Snapshot, *, task_id: int, user_id: int) -> int:
    """1-based place of a waiting (unassigned) task in its user's view of the fair queue."""
    own = GenerationTask.objects.filter(user_id=user_id, status=TaskStatus.PENDING, backend__isnull=True,
                                        pk__lte=task_id).count()
    k = max(1, own)
    mine = snap.waiting.get(user_id)
    my_priority = mine[1] if mine else 0
    my_turn = _turn_key(mine[2], mine[3]) if mine else (True, timezone.now(), task_id)
    ahead = k - 1
    for other, (waiting, priority, served, oldest) in snap.waiting.items():
        if other == user_id or priority < my_priority:
            continue
        if priority > my_priority:
            ahead += waiting
        else:
            ahead += min(waiting, k - 1) + (1 if waiting >= k and _turn_key(served, oldest) < my_turn else 0)
    return ahead + 1


def _rounded(moment: datetime) -> datetime:
    seconds = ROUND_SECONDS
    epoch = moment.timestamp()
    return datetime.fromtimestamp(round(epoch / seconds) * seconds, tz=moment.tzinfo)


@dataclass(frozen=True)
class Outlook:
    position: int | None
    estimated_start_at: datetime | None
    estimated_finish_at: datetime | None

    def as_dict(self) -> dict:
        return {"position": self.position, "estimated_start_at": self.estimated_start_at,
                "estimated_finish_at": self.estimated_finish_at}


NONE = Outlook(None, None, None)


def outlook(*, task_id: int, user_id: int, status: str, backend_id: int | None, model_name: str,
            started_at: datetime | None) -> Outlook:
    """The place and the estimated start and finish of a task not yet finished (NONE for a
    finished one)."""
    if status not in ACTIVE_STATUSES:
        return NONE
    snap = snapshot()
    run = mean_run_seconds(snap, model_name, backend_id)
    if status == TaskStatus.PROCESSING:
        if run is None or started_at is None:
            return NONE
        return Outlook(None, started_at, _rounded(max(started_at + timedelta(seconds=run), snap.taken_at)))
    if backend_id is not None:
        # Sent to a backend, about to start: behind at most what that backend runs now.
        if run is None:
            return NONE
        start = snap.taken_at + timedelta(seconds=run * RUNNING_LEFT)
        return Outlook(None, _rounded(start), _rounded(start + timedelta(seconds=run)))
    place = position(snap, task_id=task_id, user_id=user_id)
    anyone = mean_run_seconds(snap, None, None)
    if run is None or anyone is None or snap.backends == 0:
        return Outlook(place, None, None)
    wait = anyone * ((place - 1) + snap.running * RUNNING_LEFT) / snap.backends
    start = snap.taken_at + timedelta(seconds=wait)
    return Outlook(place, _rounded(start), _rounded(start + timedelta(seconds=run)))


def task_outlook(task: GenerationTask) -> Outlook:
    return outlook(task_id=task.pk, user_id=task.user_id, status=task.status, backend_id=task.backend_id,
                   model_name=task.model_name, started_at=task.started_at)
