"""Runs one generation task on a ComfyUI backend, from claim to stored images.

Delivery is at least once (django-q2 may hand the same job out again, the recovery
schedule re-enqueues stale tasks), so every step here is safe to repeat:
- the task is claimed with a conditional UPDATE on a lease; a second job for the same
  task finds the lease held and returns;
- the ComfyUI `prompt_id` was stored with the task, so before submitting the runner asks
  the backend whether it already knows that prompt (history or queue) and follows it
  instead of submitting it again;
- results are written with a conditional UPDATE that only the lease owner can make.

No database transaction is held open around a network call.
"""
from __future__ import annotations

import copy
import io
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from config.prepared import Prepared, PreparedGet, PreparedUpdate, datetime_markers, json_marker
from models_catalog.inputs import UPLOAD_KINDS
from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate
from models_catalog.services import (
    backend_abandon_prompt,
    backend_mark,
    backend_release_abandoned,
    comfy_client,
    prompt_abandon,
)
from models_catalog.selectors import template_inputs_attach
from models_catalog.templates import task_graph, template_fields

from .. import transitions
from ..comfy import (
    BindingError,
    ComfyClient,
    ComfyError,
    ComfyPromptRejected,
    ComfySocketClosed,
    ComfyUnreachable,
    Message,
    PromptTracker,
    describe_execution_error,
    describe_rejection,
    is_transient,
)
from ..events import tasks_progressed
from ..gallery.results import StorageFailed, UnreadableImage, files_delete, image_ids, result_store
from ..models import ACTIVE_STATUSES, GeneratedImage, GenerationTask, SourceImage, TaskPreview
from ..task_text import Text, message_fields, text
from .dispatch import backends_able, dispatch
from .feeds import Feeds, FeedsClosed
from .log import task_log
from .progress import ProgressBatch
from .stops import HandOver, TaskFailed, TaskGone
from .volc_run import volc_run

logger = logging.getLogger(__name__)


# Ask the backend about a prompt directly when its socket has said nothing for this long.
SILENCE_CHECK_SECONDS = 10.0
# Storing finished images again after a storage error: the first pause, and the longest.
STORAGE_RETRY_FIRST_DELAY = 0.5
STORAGE_RETRY_MAX_DELAY = 5.0


# A backend marked online and seen this recently (as read when the task was claimed) is
# not written again for every prompt it takes: many runners share one backend row.
SEEN_REFRESH_SECONDS = 10.0


def _seen_lately(backend: ComfyBackend) -> bool:
    return bool(backend.is_online and backend.last_seen_at and not backend.last_error
                and timezone.now() - backend.last_seen_at < timedelta(seconds=SEEN_REFRESH_SECONDS))


# What a runner writes and reads while it follows a task, compiled once (config.prepared):
# the intent before its first POST (every task), the lease's renewal and the check that
# the task is still its own (each running task, every few seconds and every second).
_INTENT_FIELDS = ("submitted_at", "rendered_prompt", "client_id")
_INTENT = PreparedUpdate(
    lambda pk, owner, submitted_at, rendered_prompt, client_id: (transitions.owned_by(pk, owner), {
        "submitted_at": submitted_at, "rendered_prompt": rendered_prompt, "client_id": client_id,
        "lease_until": transitions.lease_until(),
    }),
    arguments=5, markers=(None, transitions.OWNER_MARKER, *datetime_markers(1), json_marker(), "<easel client id marker>"),
    variant=transitions.lease_seconds,
)
_RENEW = PreparedUpdate(
    lambda pk, owner: (transitions.owned_by(pk, owner), {"lease_until": transitions.lease_until()}),
    arguments=2, markers=(None, transitions.OWNER_MARKER), variant=transitions.lease_seconds,
)
_STILL_OWNED = Prepared(lambda pk, owner: transitions.owned_by(pk, owner).values_list("pk"),
                        arguments=2, markers=(None, transitions.OWNER_MARKER))


@dataclass
class Outcome:
    status: str  # "success" | "error" | "interrupted"
    images: list[dict]
    error: dict | None = None


# A claimed task is read with the rows its run reads (config.prepared: each SELECT compiled
# once, where a select_related over five tables was compiled anew for every claim, and
# built each row's model: a thirteenth of a pump's CPU).
_TASK = PreparedGet(GenerationTask)
_TASK_RELATED = tuple((GenerationTask._meta.get_field(name), PreparedGet(model)) for name, model in (
    ("template", WorkflowTemplate), ("checkpoint", Checkpoint), ("backend", ComfyBackend),
    ("source_image", SourceImage)))


def task_claim(*, task_id: int, owner: str) -> GenerationTask | None:
    """Take the lease on an assigned, unfinished task, or None when another job holds it."""
    if not transitions.claim(task_id, owner=owner):
        return None
    return _claimed(task_id, owner, {})


def tasks_claimed(task_ids: list[int], *, owner_prefix: str) -> list[GenerationTask]:
    """The tasks among these whose lease `transitions.claim_many` gave to `owner_prefix`,
    in the order given, each with its template, checkpoint, backend and source image."""
    read: dict[tuple, object] = {}  # a backend or template of several tasks is read once
    tasks = [task for task in (_claimed(pk, owner_prefix + ":", read, prefix=True) for pk in task_ids) if task is not None]
    template_inputs_attach([task.template for task in tasks])
    return tasks


def _claimed(pk: int, owner: str, read: dict[tuple, object], *, prefix: bool = False) -> GenerationTask | None:
    """The task, when its lease owner is `owner` (with `prefix`: starts with it), with the
    rows its run reads: from `read` when another task of the claim read them, each task
    its own copy, as with a join (a runner marks its backend offline)."""
    task = _TASK.get(pk)
    held = (task.lease_owner or "") if task is not None else ""
    if not (held.startswith(owner) if prefix else held == owner):
        return None
    for field, reader in _TASK_RELATED:
        related_id = getattr(task, field.attname)
        if related_id is not None:
            if (field.name, related_id) not in read:
                read[field.name, related_id] = reader.get(related_id)
            field.set_cached_value(task, copy.copy(read[field.name, related_id]))
    return task


class TaskRunner:
    def __init__(self, task: GenerationTask, owner: str, *, stop: threading.Event | None = None,
                 on_slot_free: Callable[[], None] | None = None, progress: "ProgressBatch | None" = None,
                 feeds: "Feeds | None" = None):
        self.task = task
        # A pump's shared sockets (one per backend); a runner on its own opens its own.
        self.feeds = feeds
        self.owner = owner
        # A pump dispatches for every freed slot in one pass of its own loop (set here);
        # a runner on its own dispatches at once.
        self.on_slot_free = on_slot_free
        self.progress = progress
        # Set when the pump running this job hands over (generation.fleet.pump); not
        # while the images are being stored (a few seconds), which is better finished.
        self.stop = stop
        self.finishing = False
        # Every line about this task carries its id, owner, backend and prompt id.
        self.log = task_log(task)
        self.lease_renewed = time.monotonic()
        self.last_write = 0.0
        # The claim just now was the first check (the heartbeat's next is a second away).
        self.last_check = time.monotonic()
        self.last_contact = 0.0  # monotonic time Easel last reached the backend
        self.submitted_to: ComfyBackend | None = None  # set just before POST /prompt
        self.backend_lost = False  # Easel failed to reach the task's backend during this run
        self.ended = False  # this runner completed or failed the task (its lease went with it)

    # --- database writes, all conditional on still owning the lease ----------------

    def _owned(self):
        return transitions.owned_by(self.task, self.owner)

    def update(self, **values) -> None:
        """Write progress (or just renew the lease); TaskGone when the task is no longer ours."""
        if not values:
            done = _RENEW.run(self.task.pk, self.owner)
        elif tuple(values) == _INTENT_FIELDS:
            done = _INTENT.run(self.task.pk, self.owner, *values.values())
        else:
            values.setdefault("lease_until", transitions.lease_until())
            done = self._owned().update(**values)
        if not done:
            raise TaskGone()
        self.lease_renewed = time.monotonic()
        for key, value in values.items():
            if not hasattr(value, "resolve_expression"):  # the lease is the database's to compute
                setattr(self.task, key, value)

    def heartbeat(self, *, force: bool = False) -> None:
        """Renew the lease and notice deletion or cancellation, about once a second."""
        if self.stop is not None and self.stop.is_set() and not self.finishing:
            raise HandOver()
        now = time.monotonic()
        if not force and now - self.last_check < 1.0:
            return
        self.last_check = now
        if now - self.lease_renewed > settings.EASEL_TASK_LEASE_SECONDS / 3:
            self.update()
        elif _STILL_OWNED.first(self.task.pk, self.owner) is None:
            raise TaskGone()

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.heartbeat()
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def fail(self, code: str, message: Text | str, fields: dict | None = None) -> None:
        done = transitions.fail(self.task, owner=self.owner, code=code, message=message, fields=fields,
                                caller_dispatches=self.on_slot_free is not None)
        self.log.info("failed: %s", message)
        if done:
            self.ended = True
            self._dispatch_soon()  # its backend slot is free

    # --- the run -------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except HandOver:
            self.log.info("handed over to the next pump")
        except TaskGone:
            self._abandon()
        except TaskFailed as exc:
            self.fail(exc.code, exc.message, exc.fields)
        finally:
            if self.progress is not None:
                # Ended or let go: its last step is no longer the task's to show.
                self.progress.discard(self.task.pk, self.owner)

    def _values(self) -> dict:
        task = self.task
        values = {
            "checkpoint": task.checkpoint.ckpt_name if task.checkpoint else task.model_name,
            "prompt": task.prompt,
            "negative_prompt": task.negative_prompt,
            "width": task.width,
            "height": task.height,
            "batch_size": task.batch_size,
            "seed": task.seed,
            "steps": task.steps,
            "cfg": task.cfg,
            "sampler": task.sampler,
            "scheduler": task.scheduler,
        }
        if task.denoise is not None:
            values["denoise"] = task.denoise
        # The template's custom inputs (an upload's id is replaced by its name on the
        # backend when the graph is rendered).
        values.update(task.inputs or {})
        return values

    def _run(self) -> None:
        task = self.task
        if task.backend is not None and task.backend.is_volcengine:
            # A cloud model: no graph, no socket; submitted once and polled (generation.fleet.volc_run).
            volc_run(self)
            return
        if task.template is None:
            raise TaskFailed("no_template", text(gettext_noop("The workflow template of this task was removed.")))
        if task.template.takes_image and task.source_image is None:
            raise TaskFailed("no_source_image", text(gettext_noop("The source image of this task was deleted.")))
        backend = task.backend
        if backend is None:
            return  # not assigned yet: the dispatcher enqueues a job when it assigns one
        # The wait for an unreachable backend counts from the first failure since Easel
        # last reached it, so a long run that loses its backend late still gets the
        # full grace period.
        failing_since: float | None = None
        delay = 1.0
        while True:
            try:
                self._finish(self._run_on(backend))
                return
            except ComfyError as exc:
                if not is_transient(exc):
                    raise TaskFailed(
                        "backend_error", text(gettext_noop("The backend answered unexpectedly: %(e)s"), e=exc)
                    ) from exc
                backend_mark(backend_id=backend.pk, online=False, error=str(exc))
                backend.is_online = False  # so reaching it again is written (_seen_lately)
                self.backend_lost = True
                self.log.info("backend %s unreachable: %s", backend.name, exc)
            now = time.monotonic()
            if failing_since is None or self.last_contact > failing_since:
                failing_since, delay = now, 1.0
            waited = now - failing_since
            # Move the task only when another backend can run it; with nowhere else to
            # go it waits right here and resumes the moment this backend answers.
            if waited >= settings.EASEL_BACKEND_HANDBACK_SECONDS and self.elsewhere(backend):
                if not task.submitted_at:
                    # Nothing was sent there yet: give it back to the queue.
                    self.hand_back(
                        backend, text(gettext_noop("Waiting: backend %(name)s is unreachable."), name=backend.name)
                    )
                    return
                if waited >= settings.EASEL_FAILOVER_GRACE_SECONDS:
                    self._fail_over(backend)
                    return
            if waited >= settings.EASEL_BACKEND_UNREACHABLE_TIMEOUT:
                raise TaskFailed("backend_unreachable", text(gettext_noop("Backend unreachable: gave up after %(n)d s."),
                                                             n=settings.EASEL_BACKEND_UNREACHABLE_TIMEOUT))
            reason = text(gettext_noop("Backend %(name)s is unreachable, retrying."), name=backend.name)
            if task.status_message != str(reason):
                self.update(**message_fields("status", reason))
            self.wait(delay)
            delay = min(delay * 2, settings.EASEL_BACKEND_RETRY_MAX_DELAY)

    def elsewhere(self, backend: ComfyBackend) -> bool:
        """Could dispatch give this task to another backend now (its model and files, taking work)?"""
        return bool(backends_able(self.task, excluding=backend.pk))

    def hand_back(self, backend: ComfyBackend, reason: Text) -> None:
        if not transitions.hand_back(self.task, owner=self.owner, reason=reason):
            raise TaskGone()
        self.log.info("handed back to the queue (%s unreachable)", backend.name)
        self._dispatch_soon()

    def _fail_over(self, backend: ComfyBackend) -> None:
        """Move a submitted task off a backend that stayed away past the grace period.

        The old prompt is remembered on that backend and taken off it when it answers
        again; the task runs under a new prompt_id, so an image from the old run can
        never be attached to it.
        """
        backend_abandon_prompt(backend_id=backend.pk, prompt_id=str(self.task.prompt_id))
        self.fail_over(backend, text(gettext_noop("Backend %(name)s went away; moved back to the queue."),
                                     name=backend.name))

    def fail_over(self, backend: ComfyBackend, reason: Text) -> None:
        """Back to the queue, to be sent anew (a new prompt id; a VolcEngine task loses its provider task id),
        wherever dispatch places it; the run on `backend` ends as moved, with `reason`."""
        if not transitions.fail_over(self.task, owner=self.owner, reason=reason):
            raise TaskGone()
        self.log.warning("failed over from backend %s: %s", backend.name, reason)
        self._dispatch_soon()

    def _dispatch_soon(self) -> None:
        if self.on_slot_free is not None:
            self.on_slot_free()
            return
        try:
            dispatch()
        except Exception:  # the schedule dispatches again; never lose the task over it
            self.log.exception("dispatch after hand-back failed")

    def _graph(self, client: ComfyClient) -> dict:
        """Render the template for this task (uploading the source image first)."""
        task = self.task
        values = self._values()
        if task.source_image is not None:
            values["image"] = self._upload(client, task.source_image)
        for field in template_fields(task.template):
            if field.spec.kind in UPLOAD_KINDS and not field.builtin and values.get(field.name) is not None:
                upload = SourceImage.objects.filter(user_id=task.user_id, pk=values[field.name]).first()
                if upload is None:
                    raise TaskFailed("no_source_image", text(
                        gettext_noop("The picture of the input %(name)s was deleted."), name=field.name))
                values[field.name] = self._upload(client, upload)
        try:
            graph = task_graph(task.template, values)
        except BindingError as exc:
            raise TaskFailed("template_error", text(gettext_noop("The workflow template is broken: %(e)s"), e=exc)) from exc
        return graph

    def _upload(self, client: ComfyClient, source: SourceImage) -> str:
        name = f"easel-{source.sha256[:32]}.{source.extension}"
        with source.file.open("rb") as handle:
            # Same name and bytes: ComfyUI keeps the existing file, so re-uploads are free.
            answer = client.upload_image(name=name, fileobj=handle, subfolder="easel")
        stored = answer.get("name", name)
        folder = answer.get("subfolder") or ""
        return f"{folder}/{stored}" if folder else stored

    def _run_on(self, backend: ComfyBackend) -> Outcome:
        task = self.task
        client = comfy_client(backend)
        prompt_id = str(task.prompt_id)
        tracker = PromptTracker(prompt_id)
        # A prompt not sent yet goes under the pump's own client id on this backend (its
        # frames then reach the pump's one socket there); one sent before is followed
        # under the id it was sent with, the only socket ComfyUI sends its frames to.
        client_id = task.client_id
        if self.feeds is not None and not task.submitted_at:
            client_id = self.feeds.client_id(backend.pk)
        # Open the socket before submitting so no early message is missed.
        socket = self._open_socket(client, client_id)
        if self.feeds is None:
            # A socket of its own was just opened: the backend answered. (A pump's shared
            # one may have been open for a while, to a backend frozen since: contact is
            # counted from the backend's next answer below.)
            self.last_contact = time.monotonic()
        try:
            # Prompts Easel moved away from this backend while it was away go first, so a
            # backend that resumes does not run them on for nothing.
            # (The backend row read with the claim says whether it holds any; once Easel
            # lost it, the database is asked again: a fail-over may have added some.)
            if backend.abandoned_prompts or self.backend_lost:
                backend_release_abandoned(backend=backend, client=client)
            # A prompt never sent (no intent recorded) is unknown everywhere: no need to ask.
            known = self._known_to_backend(client, prompt_id) if task.submitted_at else None
            if known is not None:
                self.log.info("prompt already on %s (%s)", backend.name,
                            "finished" if isinstance(known, dict) else known)
            else:
                graph = self._graph(client)
                self.submitted_to = backend
                # (In this order: a first submit writes all three, in one compiled UPDATE.)
                intent = {} if task.submitted_at else {"submitted_at": timezone.now()}
                if task.rendered_prompt != graph:
                    intent["rendered_prompt"] = graph
                if task.client_id != client_id:
                    intent["client_id"] = client_id
                if intent:
                    # The intent, before the POST: a POST that goes unanswered may still
                    # have queued the prompt there, so from now on it counts as sent (the
                    # backend is asked first, or the prompt abandoned on it), never as a
                    # task that can go elsewhere under the same prompt_id.
                    self.update(**intent)
                try:
                    client.submit(prompt=graph, prompt_id=prompt_id, client_id=client_id)
                except ComfyPromptRejected as exc:
                    # (A partly valid graph that ComfyUI queued anyway was already taken
                    # back off its queue by the client.)
                    raise rejected(exc, task.template.bindings) from exc
                self.log.info("submitted prompt to %s", backend.name)
                loaded = task.checkpoint.ckpt_name if task.checkpoint else ""
                if backend.loaded_checkpoint != loaded:  # as read when the task was claimed
                    ComfyBackend.objects.filter(pk=backend.pk).update(loaded_checkpoint=loaded)
            self.last_contact = time.monotonic()
            if not transitions.start(task, owner=self.owner):
                raise TaskGone()
            self.lease_renewed = time.monotonic()
            if not _seen_lately(backend):
                backend_mark(backend_id=backend.pk, online=True)
            if isinstance(known, dict):
                tracker.apply_history(known)
                return self._outcome(client, tracker)
            return self._follow(client, socket, tracker)
        finally:
            socket.close()

    def _open_socket(self, client: ComfyClient, client_id: str):
        if self.feeds is None:
            return client.open_socket(client_id)
        try:
            return self.feeds.subscribe(client, client_id, str(self.task.prompt_id))
        except FeedsClosed:
            raise HandOver() from None

    def _deadline(self):
        """The task's execution timeout in seconds, and when it runs out.

        From the first start, not from this connection: a backend that keeps dropping
        and coming back, or a storage that stays broken, must not keep a task running
        for ever."""
        task = self.task
        timeout = (task.template.execution_timeout if task.template else None) or settings.EASEL_EXECUTION_TIMEOUT
        return timeout, (task.started_at or timezone.now()) + timedelta(seconds=timeout)

    def _known_to_backend(self, client: ComfyClient, prompt_id: str):
        """The history entry, "running"/"pending", or None when the backend never saw it."""
        entry = client.history(prompt_id)
        if entry:
            return entry
        return client.queue_state(prompt_id)

    def _follow(self, client: ComfyClient, socket, tracker: PromptTracker) -> Outcome:
        """Follow the prompt over the socket, with /history and /queue as the safety net.

        ComfyUI sends nothing for a prompt that was deleted or lost (a restart), and a
        dropped socket misses whatever happened meanwhile, so the runner also asks the
        backend directly: after every reconnect, and whenever the socket is silent for
        a while.
        """
        task = self.task
        prompt_id = str(task.prompt_id)
        last_heard = time.monotonic()
        missing = 0
        timeout, deadline = self._deadline()
        try:
            while not tracker.done:
                if timezone.now() > deadline:
                    client.abandon(prompt_id)
                    raise TaskFailed("timeout", text(gettext_noop("Timed out after %(n)d s."), n=timeout))
                self.heartbeat()
                if socket is not None and time.monotonic() - last_heard < SILENCE_CHECK_SECONDS:
                    try:
                        item = socket.recv(timeout=0.5)
                    except ComfySocketClosed:
                        self.log.info("socket dropped, checking /history")
                        socket.close()
                        socket = None
                        continue
                    if item is not None:
                        last_heard = self.last_contact = time.monotonic()
                        if tracker.feed(item):
                            self._write_progress(tracker)
                    continue
                if socket is None:
                    # Reconnect before asking history: an end that happens in between is
                    # then seen either on the new socket or in history.
                    try:
                        socket = self._open_socket(client, task.client_id)
                    except ComfyUnreachable:
                        socket = None
                entry = client.history(prompt_id)
                last_heard = self.last_contact = time.monotonic()
                if entry:
                    tracker.apply_history(entry)
                    break
                if client.queue_state(prompt_id) is None:
                    # Neither queued nor finished. History is written just before the
                    # end signal, so look twice more before calling it lost.
                    missing += 1
                    if missing >= 3:
                        self.log.warning("prompt vanished from the backend")
                        raise ComfyUnreachable("the backend lost the prompt (restarted?)")
                else:
                    missing = 0
                if socket is None or missing:
                    self.wait(1.0)
        finally:
            if socket is not None:
                socket.close()
        return self._outcome(client, tracker)

    def _outcome(self, client: ComfyClient, tracker: PromptTracker) -> Outcome:
        if tracker.outcome == "success" and not tracker.images:
            # The socket said success but we missed `executed`: history has the outputs.
            entry = client.history(str(self.task.prompt_id))
            if entry:
                tracker.apply_history(entry)
        return Outcome(status=tracker.outcome or "error", images=list(tracker.images), error=tracker.error)

    def _write_progress(self, tracker: PromptTracker, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < settings.EASEL_PROGRESS_WRITE_INTERVAL:
            return
        self.last_write = now
        progress = {
            "progress_value": tracker.progress_value,
            "progress_max": tracker.progress_max,
            "progress_node": _node_label(self.task, tracker.current_node),
        }
        if self.progress is not None:
            # The pump writes every runner's progress in one statement (the lease is
            # renewed by the heartbeat, which also notices a cancel).
            self.progress.put(self.task.pk, self.owner, progress)
        else:
            self.update(**progress)
        if tracker.preview is not None:
            TaskPreview.objects.update_or_create(
                task_id=self.task.pk,
                defaults={"image": tracker.preview.image, "content_type": tracker.preview.mime_type},
            )
        if self.progress is None:
            tasks_progressed([self.task.pk])  # the owner's event stream (generation.events)

    # --- endings -------------------------------------------------------------------

    def _finish(self, outcome: Outcome) -> None:
        if outcome.status == "interrupted":
            raise TaskFailed("interrupted", text(gettext_noop("The backend interrupted this generation.")))
        if outcome.status != "success":
            raise TaskFailed("execution_error", _comfy_text(describe_execution_error(outcome.error or {})))
        if not outcome.images:
            raise TaskFailed("no_output", text(gettext_noop("The workflow finished without producing an image.")))
        # The backend as read with the claim (the task has not moved since: its lease
        # would have been lost, and TaskGone raised).
        backend = self.task.backend
        client = comfy_client(backend)
        self.complete_with(lambda index, ref: self._store_image(client, index, ref), outcome.images)

    def complete_with(self, store: Callable[[int, object], GeneratedImage], outputs: list) -> None:
        """Store each output (`store(index, output)`) and complete the task with them, keeping one set."""
        stored: list[GeneratedImage] = []
        self.finishing = True
        try:
            for index, ref in enumerate(outputs):
                # (A cancel meanwhile is noticed here within a second, or by `complete`
                # below, which only the lease owner of an unfinished task can make.)
                self.heartbeat()
                stored.append(store(index, ref))
            with transaction.atomic():
                # The first output's size is the task's size from now on (img2img keeps
                # the source's size, whatever width and height the request carried).
                first = stored[0]
                if not transitions.complete(self.task, owner=self.owner, size=(first.width, first.height),
                                            caller_dispatches=self.on_slot_free is not None, images=stored):
                    raise TaskGone()
                # An earlier attempt may have stored images before dying: keep one set
                # (their files go once this commits).
                others = image_ids(task_id=self.task.pk) - {i.pk for i in stored}
                earlier = list(GeneratedImage.objects.filter(pk__in=others)) if others else []
                if earlier:
                    GeneratedImage.objects.filter(pk__in=[i.pk for i in earlier]).delete()
                    transaction.on_commit(lambda: files_delete(earlier))
        except BaseException:
            files_delete(stored)
            GeneratedImage.objects.filter(pk__in=[i.pk for i in stored if i.pk]).delete()
            raise
        self.ended = True
        self.log.info("completed with %d image(s)", len(stored))
        self._dispatch_soon()  # its backend slot is free

    def _store_image(self, client: ComfyClient, index: int, ref: dict) -> GeneratedImage:
        """Download one output and store it; a storage error is retried with backoff until
        the task's execution timeout, then the task fails with `storage_error`.

        The pictures stored before stay (the set is finished once the storage is back);
        result_store leaves nothing behind of one that failed. While it waits, the lease
        is renewed, and a cancel, a delete or the pump's hand-over ends it (_finish then
        removes what this attempt stored; the next attempt downloads again)."""
        buffer = io.BytesIO()
        client.download(ref, buffer)
        return self.store_data(index, buffer.getvalue())

    def store_data(self, index: int, data: bytes) -> GeneratedImage:
        """Store one output's bytes, retrying a storage error as `_store_image` says."""
        delay = STORAGE_RETRY_FIRST_DELAY
        while True:
            try:
                return result_store(task=self.task, index=index, data=data)
            except UnreadableImage as exc:
                raise TaskFailed("bad_output", text(gettext_noop("The backend returned an unreadable image."))) from exc
            except StorageFailed as exc:
                self.log.warning("could not store output %d: %s", index, exc)
                left = (self._deadline()[1] - timezone.now()).total_seconds()
                if left <= 0:
                    raise TaskFailed("storage_error", text(gettext_noop(
                        "Storage failed: the finished images could not be saved. Try again later."))) from exc
            reason = text(gettext_noop("The images are finished but could not be saved yet; retrying."))
            if self.task.status_message != str(reason):
                self.update(**message_fields("status", reason))
            # Waiting is no longer "finishing in a few seconds": let the pump hand over.
            self.finishing = False
            try:
                self.wait(min(delay, left))
            finally:
                self.finishing = True
            delay = min(delay * 2, STORAGE_RETRY_MAX_DELAY)

    def _abandon(self) -> None:
        """This job no longer owns the task. Only when the task was deleted or cancelled,
        or moved on under a new prompt, is its prompt stopped on the backend: a job that
        stalled past its lease (a slow call, a database pause) finds another job
        following the same prompt, and leaves it running."""
        task = self.task
        backend = self.submitted_to or (task.backend if task.submitted_at else None)
        if backend is None:
            return
        now = GenerationTask.objects.filter(pk=task.pk).values("status", "prompt_id", "lease_owner").first()
        if now is not None and now["status"] in ACTIVE_STATUSES and now["prompt_id"] == task.prompt_id:
            self.log.warning("lease lost to %s; the prompt runs on under it", now["lease_owner"] or "the queue")
            return
        prompt_abandon(backend_id=backend.pk, prompt_id=str(task.prompt_id))
        self.log.info("gone while running; prompt abandoned on %s", backend.name)


def rejected(exc: ComfyPromptRejected, bindings: dict) -> TaskFailed:
    """ComfyUI refused the graph: the task fails with ComfyUI's reasons, each put beside
    the parameter at fault, in words every reader gets in their own language."""
    message, fields = describe_rejection(exc, bindings)
    fields = {key: [_comfy_text(m) for m in messages] for key, messages in fields.items()}
    return TaskFailed("invalid_parameters", _comfy_text(message), _rename_fields(fields))


def _comfy_text(message: Message | str) -> Text | str:
    """A message of the ComfyUI client (plain Python, its own message ids) as a task
    message, shown again in each reader's language; ComfyUI's own words (a plain str)
    stay as they are."""
    if not isinstance(message, Message):
        return message
    return text(message.msgid, **{k: _comfy_text(v) for k, v in message.params.items()})


def _rename_fields(fields: dict) -> dict:
    # ComfyUI errors are reported against Easel's binding names; the API calls the
    # checkpoint `model_name`.
    return {("model_name" if key == "checkpoint" else key): value for key, value in fields.items()}


def _node_label(task: GenerationTask, node_id: str | None) -> str:
    """The running node in words ("KSampler") rather than a graph id."""
    if not node_id:
        return ""
    graph = task.rendered_prompt or (task.template.graph if task.template else {})
    node = graph.get(str(node_id), {}) if isinstance(graph, dict) else {}
    return str(node.get("class_type", node_id))[:100]


def task_run(*, task_id: int) -> None:
    owner = uuid.uuid4().hex
    task = task_claim(task_id=task_id, owner=owner)
    if task is None:
        logger.info("not claimable (finished, gone or held by another job)", extra={"task_id": task_id})
        return
    runner = TaskRunner(task, owner)
    try:
        runner.run()
    except Exception:
        # A bug must not leave the task spinning forever: fail it readably, and
        # re-raise so django-q2 records the traceback.
        runner.fail("internal_error", text(gettext_noop("Easel hit an internal error while running this task.")))
        raise
    finally:
        # Leave the task claimable at once if this job stops without finishing it.
        transitions.release(task_id, owner=owner)
