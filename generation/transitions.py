"""Every change of a task's status, in one place.

Each transition is one conditional UPDATE (compare-and-set, like django-q2's own
claim): it names the states it may start from, and, for the steps only the job
running the task may take, that job's lease. It answers whether it happened; when it
did, the task object passed in carries the new values. Nothing else writes `status`.

    pending ──assign──▶ pending+backend ──claim/start──▶ processing ──complete──▶ completed
       ▲                    │  ▲                              │  └──fail──▶ failed
       │                    │  └──────────hand_back──────────┤
       └────────────────────┴──────────────fail_over─────────┘
    pending/processing ──cancel──▶ cancelled;   failed/cancelled ──retry──▶ pending

A task that reaches a final state gets its preview dropped and, once committed, the
`generation_finished` job (webhooks, freed capacity) queued: every ending does both.

Every attempt is recorded as a TaskRun, here and nowhere else, in the transaction of the
task's own update, whatever machinery drives the runs:
- `assign` opens run n+1 on the backend (a run is the task's stay on one backend, so a
  hand-back before anything was sent is an attempt too);
- `start` stamps it submitted/started (the first time only: a job taking over a stale
  lease follows the same prompt on the same backend, so the run goes on);
- complete → completed, fail → failed (timed_out for a time limit), cancel → cancelled,
  hand_back / fail_over → moved, retry → retried (only a run still open: a failed or
  cancelled task's run ended with it), give_up_waiting or a new assignment finding a run
  still open (its backend was deleted under it) → lost, by recovery.
Each is one or two statements on the open run, found through a unique partial index:
the cost does not grow with the task's history.

Every change a user sees is told to that user's event stream here too, in the same
transaction (`generation.events`: one row, and a NOTIFY on PostgreSQL sent on commit):
created, queued again (retry, hand-back, fail-over), started, and each ending.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, CharField, DateTimeField, ExpressionWrapper, F, JSONField, Q, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, Now
from django.utils import timezone

from config.prepared import PreparedInsert, PreparedUpdate, datetime_markers
from models_catalog.models import ComfyBackend

from .models import (
    ACTIVE_STATUSES,
    GenerationTask,
    RunEnd,
    RunOutcome,
    TaskPreview,
    TaskRun,
    TaskStatus,
    new_client_id,
)
from . import events
from .queue import enqueue
from .task_text import Text, field_messages, message_fields

RETRYABLE_STATUSES = (TaskStatus.FAILED, TaskStatus.CANCELLED)

# What a task loses when it leaves its backend (back to Easel's queue).
_UNASSIGNED = {"backend": None, "assigned_at": None}
_NO_LEASE = {"lease_owner": "", "lease_until": None}
_NO_PROGRESS = {"progress_value": 0, "progress_max": 0, "progress_node": ""}


def _fresh_prompt() -> dict:
    # A new ComfyUI prompt id: the old one may still sit in a backend's queue or history
    # with its old outcome, and must never be mistaken for this run.
    # (A VolcEngine task id belongs to the run it was submitted for, like the prompt id.)
    return {"prompt_id": uuid.uuid4(), "client_id": new_client_id(), "submitted_at": None, "provider_task_id": ""}


def lease_until():
    """When a lease taken or renewed now runs out, by the database's clock: leases are
    taken and judged on several hosts, whose clocks may disagree; the database's is the
    one all of them see (a host running ahead must not take a live lease)."""
    return ExpressionWrapper(Now() + timedelta(seconds=settings.EASEL_TASK_LEASE_SECONDS),
                             output_field=DateTimeField())


def lease_lapsed() -> Q:
    """No live lease, by the database's clock (see `lease_until`)."""
    return Q(lease_until__isnull=True) | Q(lease_until__lt=Now())


TaskRef = GenerationTask | int


def _pk(task: TaskRef) -> int:
    return task if isinstance(task, int) else task.pk


def _apply(task: TaskRef, qs, values: dict) -> bool:
    """Run the UPDATE; when it happened, mirror the plain values onto the task object
    (values the database computes, like `retries + 1`, are left for a refresh)."""
    if not qs.update(**values):
        return False
    _mirror(task, values)
    return True


def owned_by(task: TaskRef, owner: str):
    """The task while the job holding `owner`'s lease may still change it."""
    return GenerationTask.objects.filter(pk=_pk(task), lease_owner=owner, status__in=ACTIVE_STATUSES)


# --- the writes each task makes once on its way: compiled once (config.prepared) ------
#
# Building an UPDATE's SQL costs the ORM five times what running it costs (0.41 against
# 0.07 ms of CPU on SQLite); the pump makes these for every task it runs.

# Where a lease owner's name goes in a compiled statement on `owned_by` (the runner's
# and the progress writes use it too).
OWNER_MARKER = "<easel lease owner marker>"
_NOW, _THEN = datetime_markers(2)


def lease_seconds() -> int:
    """The `variant` of a compiled statement that renews the lease (`lease_until`
    compiles the lease's length in; a test may change it)."""
    return settings.EASEL_TASK_LEASE_SECONDS


_START = PreparedUpdate(
    lambda pk, owner, submitted, started: (owned_by(pk, owner), {
        "status": TaskStatus.PROCESSING, "submitted_at": submitted, "started_at": started,
        **message_fields("status", ""), "waiting_since": None, "lease_until": lease_until(),
    }),
    arguments=4, markers=(None, OWNER_MARKER, _NOW, _THEN), variant=lease_seconds,
)
_RUN_START = PreparedUpdate(
    lambda task_id, now: (_open_run(task_id), {
        "submitted_at": Coalesce("submitted_at", Value(now, output_field=DateTimeField())),
        "started_at": Coalesce("started_at", Value(now, output_field=DateTimeField())),
    }),
    arguments=2, markers=(None, _NOW),
)
_COMPLETE = PreparedUpdate(
    lambda pk, owner, now, width, height: (owned_by(pk, owner), {
        "status": TaskStatus.COMPLETED, "progress_value": F("progress_max"), **message_fields("status", ""),
        "completed_at": now, **_NO_LEASE, "width": width, "height": height,
    }),
    arguments=5, markers=(None, OWNER_MARKER, _NOW, None, None),
)
# Dispatch's assignments: one task's UPDATE, run for every task of a pass in one call
# (a CASE with a branch per task was compiled anew every pass); their attempts' INSERT.
_ASSIGN = PreparedUpdate(
    lambda pk, backend_id, now: (GenerationTask.objects.filter(pk=pk, status=TaskStatus.PENDING, backend__isnull=True),
                                 {"backend_id": backend_id, "assigned_at": now, **message_fields("status", "")}),
    arguments=3, markers=(None, None, _NOW),
)
_RUNS_INSERT = PreparedInsert(TaskRun, (
    "task", "number", "backend", "backend_name", "prompt_id", "assigned_at", "submitted_at", "started_at", "ended_at",
    "outcome", "ended_by", "error_code", "error_message", "error_params",
))
_PREVIEW_GONE = PreparedUpdate(lambda task_id: (TaskPreview.objects.filter(task_id=task_id), None), arguments=1)
# An attempt that ends without an error, by how it ended: (outcome, ended_by) → its UPDATE.
_RUN_ENDS: dict[tuple[str, str], PreparedUpdate] = {}


def _mirror(task: TaskRef, values: dict) -> None:
    """After an UPDATE that happened: its plain values onto the task object (values the
    database computes, like `retries + 1`, are left for a refresh)."""
    if not isinstance(task, int):
        for key, value in values.items():
            if not hasattr(value, "resolve_expression"):
                setattr(task, key, value)


def _open_run(task: TaskRef):
    return TaskRun.objects.filter(task_id=_pk(task), outcome=RunOutcome.RUNNING)


def _run_start(task: TaskRef, now: datetime, known: dict | None = None) -> None:
    """The task was just assigned: its next attempt begins on that backend. `known`: its
    prompt_id, backend_id and backend__name, when the caller has them (dispatch does)."""
    row = known or GenerationTask.objects.filter(pk=_pk(task)).values("prompt_id", "backend_id", "backend__name").get()
    _runs_start([{**row, "task_id": _pk(task)}], now)


def _runs_start(rows: list[dict], now: datetime) -> None:
    """`_run_start` for several tasks (each row: task_id, prompt_id, backend_id,
    backend__name): one read of their attempts, one INSERT of the new ones."""
    last: dict[int, tuple[int, int, str]] = {}
    for pk, task_id, number, outcome in TaskRun.objects.filter(task_id__in=[r["task_id"] for r in rows]).values_list(
            "pk", "task_id", "number", "outcome"):
        if task_id not in last or number > last[task_id][1]:
            last[task_id] = (pk, number, outcome)
    left_open = [pk for pk, _number, outcome in last.values() if outcome == RunOutcome.RUNNING]
    if left_open:
        # Left open: its backend was deleted under it (SET_NULL) and the task queued again.
        TaskRun.objects.filter(pk__in=left_open).update(outcome=RunOutcome.LOST, ended_by=RunEnd.RECOVERY, ended_at=now)
    _RUNS_INSERT.run([
        (r["task_id"], last.get(r["task_id"], (0, 0, ""))[1] + 1, r["backend_id"], r["backend__name"] or "",
         r["prompt_id"], now, None, None, None, RunOutcome.RUNNING, "", "", "", {})
        for r in rows
    ])


def _run_end(task: TaskRef, outcome: str, ended_by: str, *, now: datetime | None = None,
             code: str = "", error: Text | str = "") -> None:
    """The task's open attempt (if any) ends this way."""
    if not code and not error:
        ending = _RUN_ENDS.get((outcome, ended_by))
        if ending is None:
            ending = _RUN_ENDS[(outcome, ended_by)] = PreparedUpdate(
                lambda task_id, at: (_open_run(task_id), {
                    "outcome": outcome, "ended_by": ended_by, "ended_at": at, "error_code": "",
                    **message_fields("error", ""),
                }),
                arguments=2, markers=(None, _NOW),
            )
        ending.run(_pk(task), now or timezone.now())
        return
    _open_run(task).update(
        outcome=outcome, ended_by=ended_by, ended_at=now or timezone.now(), error_code=code,
        **message_fields("error", error),
    )


# How a failure's code ends its attempt (anything else is a plain failure).
_FAILURE_ENDINGS = {"timeout": (RunOutcome.TIMED_OUT, RunEnd.TIMEOUT)}


def _ended(task: TaskRef, *, caller_dispatches: bool = False) -> None:
    """A task reached a final state: its live preview goes, and once the transaction
    commits the `generation_finished` job sends its webhook and lets dispatch use the slot.

    `caller_dispatches`: the pump ending it dispatches for the freed slot itself (one
    pass for many endings), so the job is queued only when there is a webhook to send
    (the tick's sweep sends one a lost job missed)."""
    task_id = _pk(task)
    _PREVIEW_GONE.run(task_id)
    if caller_dispatches:
        callback = (task.callback_url if isinstance(task, GenerationTask)
                    else GenerationTask.objects.filter(pk=task_id).values_list("callback_url", flat=True).first())
        if not callback:
            return
    transaction.on_commit(lambda: enqueue("generation_finished", task_id))


# --- Easel's queue ------------------------------------------------------------------


def created(task: GenerationTask) -> None:
    """A task was just stored (pending): its owner's stream hears of it. Call inside the
    transaction that stores it (generation.services.generation_create)."""
    events.task_created(task)


def assign(task: TaskRef, *, backend_id: int, now: datetime | None = None) -> bool:
    """The dispatcher gives a waiting task a backend (a task cancelled a moment ago stays
    cancelled); dispatch assigns a whole pass at once with `assign_many`."""
    now = now or timezone.now()
    prompt_id = GenerationTask.objects.filter(pk=_pk(task)).values_list("prompt_id", flat=True).first()
    name = ComfyBackend.objects.filter(pk=backend_id).values_list("name", flat=True).first()
    if not assign_many([(_pk(task), backend_id, prompt_id, name or "")], now=now):
        return False
    if not isinstance(task, int):
        task.backend_id, task.assigned_at = backend_id, now
        for key, value in message_fields("status", "").items():
            setattr(task, key, value)
    return True


def assign_many(plan: list[tuple[int, int, object, str]], *, now: datetime | None = None) -> list[tuple[int, int]]:
    """`assign` for a dispatch pass's whole plan, (task id, backend id, its prompt id, the
    backend's name) each: one UPDATE, one read back, their attempts in one INSERT, where
    one task at a time took three statements each. Answers the (task, backend) pairs
    assigned (a task cancelled a moment ago stays cancelled). Call under dispatch's lock."""
    if not plan:
        return []
    now = now or timezone.now()
    ids = [task_id for task_id, _b, _p, _n in plan]
    with transaction.atomic(savepoint=False):
        _ASSIGN.run_many([(task_id, backend_id, now) for task_id, backend_id, _p, _n in plan])
        # This pass's own moment marks what it assigned (passes run one at a time).
        got = dict(GenerationTask.objects.filter(pk__in=ids, assigned_at=now, status=TaskStatus.PENDING)
                   .values_list("pk", "backend_id"))
        done = [row for row in plan if got.get(row[0]) == row[1]]
        if done:
            _runs_start([{"task_id": task_id, "backend_id": backend_id, "prompt_id": prompt_id,
                          "backend__name": backend_name} for task_id, backend_id, prompt_id, backend_name in done], now)
    return [(task_id, backend_id) for task_id, backend_id, _p, _n in done]


def claim(task: TaskRef, *, owner: str) -> bool:
    """A job takes the lease on an assigned, unfinished task no live job holds."""
    qs = (
        GenerationTask.objects.filter(pk=_pk(task), backend__isnull=False, status__in=ACTIVE_STATUSES)
        .filter(lease_lapsed())
    )
    return _apply(task, qs, {"lease_owner": owner, "lease_until": lease_until(), "attempts": F("attempts") + 1})


def claim_many(task_ids: list[int], *, owner_prefix: str) -> None:
    """`claim` for several tasks in one UPDATE, each under the owner `<prefix>:<id>`; the
    caller reads back which it got (another pump may have been quicker for some)."""
    (GenerationTask.objects.filter(pk__in=task_ids, backend__isnull=False, status__in=ACTIVE_STATUSES)
     .filter(lease_lapsed())
     .update(lease_owner=Concat(Value(owner_prefix + ":"), Cast("id", CharField())),
             lease_until=lease_until(), attempts=F("attempts") + 1))


def release(task: TaskRef, *, owner: str) -> bool:
    """The job stops without finishing: the task is claimable again at once."""
    return _apply(task, GenerationTask.objects.filter(pk=_pk(task), lease_owner=owner), dict(_NO_LEASE))


# --- on a backend -------------------------------------------------------------------


def start(task: GenerationTask, *, owner: str, now: datetime | None = None) -> bool:
    """The backend has the prompt (just submitted, or found already there): processing."""
    now = now or timezone.now()
    # A run that takes over a prompt already running (a hand-over to the next pump, a
    # restart) starts it again for its lease, not for the reader: `started` is said once.
    resumed = task.status == TaskStatus.PROCESSING
    submitted, started = task.submitted_at or now, task.started_at or now
    with transaction.atomic():
        done = bool(_START.run(task.pk, owner, submitted, started))
        if done:
            _mirror(task, {"status": TaskStatus.PROCESSING, "submitted_at": submitted, "started_at": started,
                           **message_fields("status", ""), "waiting_since": None})
            # (The task keeps its first start across fail-overs; each run has its own.)
            _RUN_START.run(task.pk, now)
            if not resumed:
                events.task_started(task)
    return done


def complete(
    task: TaskRef, *, owner: str, size: tuple[int, int] | None = None, now: datetime | None = None,
    caller_dispatches: bool = False, images: list | None = None,
) -> bool:
    """The images are stored: completed. Call inside the transaction that keeps them;
    `images`, the set the task keeps, when the caller has it (spares reading it back).

    `size` is the (width, height) of the first picture the task produced. It replaces the
    requested size, which an img2img workflow ignores (its result has the source's size),
    so the task page, history, API and admin all show the size of what was made.
    """
    now = now or timezone.now()
    values = {
        "status": TaskStatus.COMPLETED,
        "progress_value": F("progress_max"),
        **message_fields("status", ""),
        "completed_at": now,
        **_NO_LEASE,
    }
    if size is not None:
        values["width"], values["height"] = size
    # No savepoint inside the caller's transaction (the runner's, which keeps the images):
    # an error here rolls back all of it anyway.
    with transaction.atomic(savepoint=False):
        if size is not None:
            done = bool(_COMPLETE.run(_pk(task), owner, now, size[0], size[1]))
            if done:
                _mirror(task, values)
        else:
            done = _apply(task, owned_by(task, owner), values)
        if done:
            _run_end(task, RunOutcome.COMPLETED, RunEnd.COMPLETION, now=now)
            _ended(task, caller_dispatches=caller_dispatches)
            events.task_completed(task, images)
    return done


def _failed(code: str, message: Text | str, fields: dict | None, now: datetime | None) -> dict:
    error = message_fields("error", message)
    english, stored = field_messages(fields or {})
    if any(m for messages in stored.values() for m in messages):
        # Each parameter's messages beside the error's own, to show them translated too.
        error["error_params"] = {**error["error_params"], "fields": stored}
    return {
        "status": TaskStatus.FAILED,
        "error_code": code,
        **error,
        "error_fields": english,
        **message_fields("status", ""),
        "completed_at": now or timezone.now(),
        **_NO_LEASE,
    }


def fail(task: TaskRef, *, owner: str, code: str, message: Text | str, fields: dict | None = None,
         caller_dispatches: bool = False) -> bool:
    """The job running the task gives up on it, with a reason for its owner."""
    with transaction.atomic():
        values = _failed(code, message, fields, None)
        done = _apply(task, owned_by(task, owner), values)
        if done:
            outcome, ended_by = _FAILURE_ENDINGS.get(code, (RunOutcome.FAILED, RunEnd.FAILURE))
            _run_end(task, outcome, ended_by, now=values["completed_at"], code=code, error=message)
            _ended(task, caller_dispatches=caller_dispatches)
            events.task_failed(task, code=code, values=values)
    if not done:
        # Not ours any more; a preview left by this job must not outlive it.
        TaskPreview.objects.filter(task_id=_pk(task), task__status__in=RETRYABLE_STATUSES).delete()
    return done


def give_up_waiting(task: TaskRef, *, code: str, message: Text | str) -> bool:
    """A task waited in Easel's queue, with no backend, longer than it may."""
    qs = GenerationTask.objects.filter(pk=_pk(task), status=TaskStatus.PENDING, backend__isnull=True)
    # No savepoint inside dispatch's transaction (two statements more per task): an
    # error here ends the whole pass anyway.
    with transaction.atomic(savepoint=False):
        values = _failed(code, message, None, None)
        done = _apply(task, qs, values)
        if done:
            # Its runs ended when it left each backend; one still open lost its backend.
            _run_end(task, RunOutcome.LOST, RunEnd.RECOVERY, now=values["completed_at"])
            _ended(task)
            events.task_failed(task, code=code, values=values)
    return done


def hand_back(task: GenerationTask, *, owner: str, reason: Text | str) -> bool:
    """Nothing was sent to the backend yet and it is unreachable: back to the queue."""
    with transaction.atomic():
        done = _apply(task, owned_by(task, owner), {
            "status": TaskStatus.PENDING,
            **_UNASSIGNED,
            **message_fields("status", reason),
            "waiting_since": task.waiting_since or timezone.now(),
            **_NO_LEASE,
        })
        if done:
            _run_end(task, RunOutcome.MOVED, RunEnd.HAND_BACK, error=reason)
            events.task_queued(task)
    return done


def fail_over(task: GenerationTask, *, owner: str, reason: Text | str) -> bool:
    """A submitted task's backend stayed away past the grace period: back to the queue
    under a new prompt id (the caller remembers the old prompt to take it off that backend)."""
    with transaction.atomic():
        done = _apply(task, owned_by(task, owner), {
            "status": TaskStatus.PENDING,
            **_UNASSIGNED,
            **_fresh_prompt(),
            **_NO_PROGRESS,
            **message_fields("status", reason),
            "waiting_since": task.waiting_since or timezone.now(),
            **_NO_LEASE,
        })
        if done:
            _run_end(task, RunOutcome.MOVED, RunEnd.FAIL_OVER, error=reason)
            TaskPreview.objects.filter(task_id=_pk(task)).delete()
            events.task_queued(task)
    return done


# --- the owner's acts ---------------------------------------------------------------


def cancel(task: TaskRef) -> bool:
    """The owner (or staff) stops an unfinished task, wherever it is."""
    qs = GenerationTask.objects.filter(pk=_pk(task), status__in=ACTIVE_STATUSES)
    now = timezone.now()
    with transaction.atomic():
        done = _apply(task, qs, {
            "status": TaskStatus.CANCELLED,
            "completed_at": now,
            **message_fields("status", ""),
            **_NO_LEASE,
        })
        if done:
            _run_end(task, RunOutcome.CANCELLED, RunEnd.CANCEL, now=now)
            _ended(task)
            events.task_cancelled(task)
    return done


def retry(task: TaskRef) -> bool:
    """A failed or cancelled task runs again as the same task (same id for clients).

    Its error is cleared; the last one is kept as the previous error (a cancelled run has
    none, so an earlier failure stays there), for the task page to show.
    """
    qs = GenerationTask.objects.filter(pk=_pk(task), status__in=RETRYABLE_STATUSES)
    no_error = Q(error_message="")
    now = timezone.now()
    with transaction.atomic():
        # Its run normally ended with the failure or the cancel; one still open ends here,
        # before the task is queued again (the next assignment opens the next run).
        if _retry(task, qs, no_error, now):
            _run_end(task, RunOutcome.RETRIED, RunEnd.RETRY, now=now)
            events.task_queued(task)
            return True
    return False


def _retry(task: TaskRef, qs, no_error: Q, now: datetime) -> bool:
    return _apply(task, qs, {
        "previous_error_message": Case(When(no_error, then=F("previous_error_message")), default=F("error_message")),
        "previous_error_params": Case(
            When(no_error, then=F("previous_error_params")), default=F("error_params"), output_field=JSONField()
        ),
        "status": TaskStatus.PENDING,
        "queued_at": now,
        **_fresh_prompt(),
        **_UNASSIGNED,
        "started_at": None,
        "completed_at": None,
        "waiting_since": None,  # a new wait: an old one must not fail it at once
        "rendered_prompt": None,
        "error_code": "",
        **message_fields("error", ""),
        "error_fields": {},
        **message_fields("status", ""),
        **_NO_PROGRESS,
        "attempts": 0,
        "retries": F("retries") + 1,
        **_NO_LEASE,
    })
