"""The dispatcher: Easel's own fair queue in front of the ComfyUI backends.

Pending tasks wait in the database (so the queue survives restarts of every process).
`dispatch()` hands them to backends:

- fairly: round-robin across users with pending work, oldest first within a user, the
  user served least recently first; staff-set user priority goes first (strict tiers);
- within limits: a user's tasks in flight never exceed their concurrency cap;
- where they can run: a task goes to an online, enabled, non-draining backend that has
  its checkpoint and every other file it needs (LoRAs, upscale models, …), preferring the one whose loaded checkpoint matches (no model reload),
  then the least loaded;
- without piling up: each backend holds at most `max_in_flight` tasks (one running plus
  one waiting in ComfyUI's own queue keeps it busy between prompts).

A task is "assigned" when it gets a backend (`backend` set, still `pending`); a pump
(generation.fleet.pump) then claims it, submits it and it becomes `processing`. Dispatch runs in one transaction
behind a lock, so two workers dispatching at once cannot overfill a backend or hand
out a task twice; the run job's claim is a second guard.
"""
from __future__ import annotations

import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import transaction
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from config.prepared import Prepared
from models_catalog.models import Checkpoint, ComfyBackend
from models_catalog.selectors import backends_having
from models_catalog.services import backends_health_check

from .. import transitions
from ..models import ACTIVE_STATUSES, GenerationTask, TaskStatus
from . import locks

logger = logging.getLogger(__name__)

# How many waiting tasks one dispatch pass looks at. Enough to fill every backend many
# times over; the next pass (after any task ends) sees the rest.
SCAN_LIMIT = 2000
# Of each user's waiting tasks, a pass reads only the oldest: as many as the backends
# have room for, plus this many (for tasks no backend with room can take, like one that
# needs a LoRA only a busy backend has). A user with thousands waiting costs no more.
USER_SCAN_MARGIN = 16
# Before any time a user was served (a fixed instant: no date arithmetic that a 29
# February could break).
EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
# "Run dispatch again": in the cache every process shares (the cluster's heartbeats').
AGAIN_CACHE, AGAIN_KEY = "qcluster", "easel:dispatch-again"
# How often dispatch may re-probe an offline backend.
PROBE_INTERVAL_SECONDS = 5.0


@dataclass
class _Candidate:
    id: int
    user_id: int
    checkpoint_id: int | None
    prompt_id: object
    # The backends that have every file it needs (its checkpoint included).
    options: frozenset[int] = frozenset()


def dispatch(*, probe: bool = True, wait: bool = True, pumps: bool = True) -> list[int]:
    """Assign as many waiting tasks as the backends can take; a pump runs them.

    With `probe`, offline backends not checked in the last few seconds are asked first
    whether they are back (only while tasks wait), so a returning backend gets work
    without waiting for the schedule. Web requests dispatch without probing, and
    without `wait`: when another pass holds the lock they queue a dispatch job instead
    of waiting behind it. With `pumps`, a pass that assigned tasks makes sure a pump
    runs them (a pump dispatching for itself knows one does).
    """
    if probe:
        _probe_offline_backends()
    done = _pass(wait=wait, pumps=pumps)
    if done is None:
        return []
    # Asked for while this pass held the lock: one more, which sees what they added.
    # (One asked for after this check is run by the pump, which looks every poll.) Read
    # first: usually nobody asked, and a read takes no write lock (SQLite has one).
    while again_requested() and again_take():
        done += _pass(wait=True, pumps=pumps) or []
    if done:
        logger.info("dispatched %d task(s): %s", len(done), ", ".join(f"{t}→{b}" for t, b in done))
    return [t for t, _b in done]


def again_request() -> None:
    """Another pass holds the lock: ask for one more after it, without waiting for it.

    A flag, not a job per request: a burst of creates asks once, and the pass that
    holds the lock (or the pump's next poll) runs it."""
    caches[AGAIN_CACHE].set(AGAIN_KEY, 1, timeout=None)


def again_requested() -> bool:
    return caches[AGAIN_CACHE].get(AGAIN_KEY) is not None


def again_take() -> bool:
    return bool(caches[AGAIN_CACHE].delete(AGAIN_KEY))


def _pass(*, wait: bool, pumps: bool = True) -> list[tuple[int, int]] | None:
    """One dispatch pass under the lock; None when `wait` is off and another pass holds it."""
    with transaction.atomic():
        if not wait:
            if not locks.transaction_try_lock(locks.DISPATCH):
                # Another pass runs now: this request's task is seen by one more pass
                # after it, without the request waiting for the lock.
                transaction.on_commit(again_request)
                return None
        else:
            locks.transaction_lock(locks.DISPATCH)
        now = timezone.now()
        # Conditional: a task cancelled a moment ago stays cancelled.
        done = transitions.assign_many(_plan(), now=now)
        if done:
            users = GenerationTask.objects.filter(pk__in=[t for t, _b in done]).values("user_id")
            get_user_model().objects.filter(pk__in=users).update(last_served_at=now)  # one statement
    if done and pumps:
        # A pump claims assigned tasks within a poll; make sure one runs.
        ensure_pumps()
    return done


def ensure_pumps() -> None:
    from .pump import pumps_ensure  # the pump runs jobs that dispatch again: imported when used

    try:
        pumps_ensure()
    except Exception:  # the tick ensures them too; an assignment is never undone for it
        logger.exception("could not ensure the pumps")


def waiting_exists() -> bool:
    """Whether any task waits for a backend (one index read: task_status_backend)."""
    return GenerationTask.objects.filter(status=TaskStatus.PENDING, backend__isnull=True).exists()


def _probe_offline_backends() -> None:
    if waiting_exists():
        backends_health_check(only_offline=True, min_interval=PROBE_INTERVAL_SECONDS)


def _taking_work():
    """The backends dispatch gives work to."""
    return ComfyBackend.objects.filter(enabled=True, is_online=True, draining=False)


def _models_on(backend_ids) -> dict[int, set[int]]:
    """Checkpoint id → which of these backends have it (a VolcEngine backend's offered models are its checkpoints)."""
    where: dict[int, set[int]] = defaultdict(set)
    for checkpoint_id, backend_id in Checkpoint.backends.through.objects.filter(
        comfybackend_id__in=list(backend_ids)
    ).values_list("checkpoint_id", "comfybackend_id"):
        where[checkpoint_id].add(backend_id)
    return where


def _able(checkpoint_id: int | None, files: dict | None, backend_ids, where: dict[int, set[int]]) -> frozenset[int]:
    """Of these backends, the ones that can run a task of this model needing these files (any, for no model)."""
    found = set(backend_ids) if checkpoint_id is None else set(where.get(checkpoint_id, ()))
    holders = backends_having({k: set(v) for k, v in (files or {}).items()})
    return frozenset(found if holders is None else found & holders)


def backends_able(task: GenerationTask, *, excluding: int | None = None) -> frozenset[int]:
    """The backends taking work now (other than `excluding`) that dispatch could give this task to.

    The runner asks before moving a task off a backend that stopped answering (ComfyUI or VolcEngine): moving it
    helps only when this rule, the one dispatch places it by, finds another home for it."""
    ids = set(_taking_work().exclude(pk=excluding).values_list("pk", flat=True))
    if not ids:
        return frozenset()
    return _able(task.checkpoint_id, task.required_files, ids, _models_on(ids))


class _Backend(NamedTuple):
    pk: int
    name: str
    max_in_flight: int
    loaded_checkpoint: str


# What every pass reads, compiled once (config.prepared): the backends taking work (the
# fields a plan reads: a backend row also carries its health and catalog answers), the
# tasks on each backend, the checkpoints' file names, and each user's oldest waiting.
_BACKENDS = Prepared(lambda: _taking_work().values_list("id", "name", "max_in_flight", "loaded_checkpoint"),
                     arguments=0)
_LOAD = Prepared(lambda: GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False)
                 .values_list("backend_id").annotate(n=Count("id")), arguments=0)
_CHECKPOINT_FILES = Prepared(lambda: Checkpoint.objects.values_list("pk", "ckpt_name"), arguments=0)
_WAITING = Prepared(
    lambda per_user: GenerationTask.objects.filter(status=TaskStatus.PENDING, backend__isnull=True)
    .annotate(place=Window(RowNumber(), partition_by=[F("user_id")], order_by=[F("created_at").asc(), F("id").asc()]))
    .filter(place__lte=per_user)
    .order_by("created_at", "id")
    .values_list("id", "user_id", "checkpoint_id", "required_files", "prompt_id")[:SCAN_LIMIT],
    arguments=1,
)


def _plan() -> list[tuple[int, int, object, str]]:
    backends = {row[0]: _Backend(*row) for row in _BACKENDS.rows()}
    if not backends:
        return []
    load = dict(_LOAD.rows())
    free = {pk: b.max_in_flight - load.get(pk, 0) for pk, b in backends.items()}
    if all(n <= 0 for n in free.values()):
        return []
    where = _models_on(backends)
    ckpt_names = {pk: name for pk, name in _CHECKPOINT_FILES.rows() if pk in where}
    room = sum(n for n in free.values() if n > 0)
    # A user gets at most `room` tasks in a pass, so their oldest `room` are enough unless
    # some of those can run on no backend with room (a LoRA only a busy backend has): then
    # once more, deeper. A pass after each ending (room 1-5) reads a few rows a user, not
    # a screenful each.
    for per_user in (room, room + USER_SCAN_MARGIN):
        plan, short = _plan_over(_waiting(per_user), backends, free, where, ckpt_names, per_user)
        if not short:
            break
    return plan


def _waiting(per_user: int) -> list[tuple]:
    """The oldest `per_user` waiting tasks of each user, oldest first (at most SCAN_LIMIT)."""
    return _WAITING.rows(per_user)


def _plan_over(waiting, backends: dict, free: dict, where: dict, ckpt_names: dict,
               per_user: int) -> tuple[list[tuple[int, int, object, str]], bool]:
    """The plan for these waiting tasks, and whether it is short: room is left that a
    user's unread tasks might fill (their `per_user` read could not all be placed)."""
    if not waiting:
        return [], False
    free = dict(free)
    loaded = {pk: b.loaded_checkpoint for pk, b in backends.items()}
    # Tasks needing the same files share one answer (most need none, or the same LoRAs).
    having: dict[tuple, frozenset[int]] = {}

    def options(checkpoint_id, files) -> frozenset[int]:
        key = (checkpoint_id, tuple(sorted((k, tuple(sorted(v))) for k, v in (files or {}).items())))
        if key not in having:
            having[key] = _able(checkpoint_id, files, backends, where)
        return having[key]

    queues: dict[int, deque[_Candidate]] = defaultdict(deque)
    for task_id, user_id, checkpoint_id, files, prompt_id in waiting:
        queues[user_id].append(_Candidate(task_id, user_id, checkpoint_id, prompt_id, options(checkpoint_id, files)))
    read = {user_id: len(queue) for user_id, queue in queues.items()}
    users = {
        u["id"]: u
        for u in get_user_model().objects.filter(pk__in=list(queues)).values(
            "id", "priority", "max_concurrent_tasks", "last_served_at")
    }
    in_flight = dict(
        GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False, user_id__in=list(queues))
        .values_list("user_id")
        .annotate(n=Count("id"))
    )

    def cap(user_id: int) -> int:
        return users.get(user_id, {}).get("max_concurrent_tasks", 1)

    # Round-robin position: whoever was served longest ago (or never) goes first. Read
    # from the user's row (kept by `dispatch`), not from the history, whatever its size.
    def order_key(user_id: int):
        served = users.get(user_id, {}).get("last_served_at")
        return (served is not None, served or EPOCH, queues[user_id][0].id)

    tiers: dict[int, list[int]] = defaultdict(list)
    for user_id in queues:
        tiers[users[user_id]["priority"] if user_id in users else 0].append(user_id)

    plan: list[tuple[int, int, object, str]] = []  # task, backend, its prompt id, the backend's name
    for priority in sorted(tiers, reverse=True):
        rotation = sorted(tiers[priority], key=order_key)
        progressed = True
        while progressed and any(n > 0 for n in free.values()):
            progressed = False
            for user_id in rotation:
                if in_flight.get(user_id, 0) >= cap(user_id) or not queues[user_id]:
                    continue
                candidate = _first_placeable(queues[user_id], free)
                if candidate is None:
                    continue
                want = ckpt_names.get(candidate.checkpoint_id, "")
                backend_id = _choose(candidate.options, free, backends, loaded, want)
                queues[user_id].remove(candidate)
                free[backend_id] -= 1
                loaded[backend_id] = want
                in_flight[user_id] = in_flight.get(user_id, 0) + 1
                plan.append((candidate.id, backend_id, candidate.prompt_id, backends[backend_id].name))
                progressed = True
    short = any(n > 0 for n in free.values()) and any(
        read[user_id] >= per_user and queues[user_id] and in_flight.get(user_id, 0) < cap(user_id)
        for user_id in queues
    )
    return plan, short


def _first_placeable(queue, free) -> _Candidate | None:
    """The user's oldest task that some backend with free room can run now."""
    for candidate in queue:
        if any(free.get(b, 0) > 0 for b in candidate.options):
            return candidate
    return None


def _choose(options: set[int], free: dict, backends: dict, loaded: dict, want: str) -> int:
    """Never queue behind work while a backend sits idle; among the rest prefer the one
    with the model already loaded (no reload), then the least loaded."""
    open_ = [b for b in options if free.get(b, 0) > 0]
    idle = [b for b in open_ if free[b] == backends[b].max_in_flight]
    open_ = idle or open_

    def key(pk: int):
        busy = backends[pk].max_in_flight - free[pk]
        return (loaded.get(pk) != want, busy / max(1, backends[pk].max_in_flight), busy, pk)

    return min(open_, key=key)
