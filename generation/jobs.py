"""Every function django-q2 runs, under the dotted name it stores.

Queued jobs and schedules are rows in the database that outlive a deploy, so these
names never move: each is a thin wrapper that loads by id and calls the room that
does the work (see docs/architecture.md).
"""
from __future__ import annotations

import logging

from config.db import retry_once_if_lost
from models_catalog.services import backends_from_settings, backends_health_check, catalog_sync, prompt_abandon

from .events import events_prune
from .fleet.dispatch import dispatch
from .fleet.pump import pump_run as _pump_run, pumps_ensure
from .fleet.recovery import tasks_recover
from .fleet.runner import task_run
from .gallery.retention import retention_run as _retention_run
from .idempotency import idempotency_keys_expire as _idempotency_keys_expire
from .ops.rollup import roll_up
from .webhooks.delivery import webhook_deliver as _webhook_deliver, webhook_retry_due
from .webhooks.services import webhook_enqueue_for_task, webhooks_sweep

logger = logging.getLogger(__name__)


def generation_run(task_id: int) -> None:
    # Jobs of one prompt each, queued before the pump: still run what they name.
    task_run(task_id=task_id)


def pump_run(pump_id: int) -> None:
    _pump_run(pump_id=pump_id)


def generation_abandon(backend_id: int, prompt_id: str) -> None:
    prompt_abandon(backend_id=backend_id, prompt_id=prompt_id)


def generation_finished(task_id: int) -> None:
    """After a task ends: send its webhook, let the dispatcher use the freed capacity."""
    # Both steps are idempotent, so each is run again once on a new connection when the
    # database connection dies under it: django-q2 does not retry a failed job
    # (ack_failures), and the tick's sweep would only make the webhook a minute later.
    try:
        retry_once_if_lost(dispatch, what="dispatch after a task ended")
    finally:
        # Freed capacity first; a webhook problem must not hold back the queue.
        retry_once_if_lost(lambda: webhook_enqueue_for_task(task_id=task_id), what=f"webhook of task {task_id}")


def generation_dispatch() -> None:
    dispatch()


def generation_recover() -> int:
    return tasks_recover()


def webhook_deliver(delivery_id: int) -> None:
    _webhook_deliver(delivery_id)


def retention_run() -> dict:
    return _retention_run()


def idempotency_keys_expire() -> int:
    return _idempotency_keys_expire()


def studio_tick() -> None:
    """The periodic housekeeping (a django-q2 schedule): backend health, the pumps, recovery, dispatch,
    webhook retries and the sweep for missing ones, the dashboard's rollup.

    Each step on its own: one that fails (a backend's odd answer, a database error) is
    logged and the others still run. A database connection that dies under a step is
    replaced and the step run once more (they are all idempotent), so one cut does not
    fail every step after it.
    """
    checked: list = []

    def health() -> None:
        # COMFYUI_URLS may name backends nobody registered yet (web and workers started by hand).
        backends_from_settings()
        checked.extend(backends_health_check())

    steps = (
        ("backend health", health),
        # Keep each backend's checkpoints and other model files current (added or removed on the server).
        ("catalog sync", lambda: catalog_sync(backends=[b for b in checked if b.is_online])),
        ("pumps", pumps_ensure),
        ("recovery", tasks_recover),
        ("dispatch", dispatch),
        ("webhook retries", webhook_retry_due),
        ("webhook sweep", webhooks_sweep),
        ("stats rollup", roll_up),
        # Events no reconnecting stream needs any more (generation.events).
        ("event prune", events_prune),
    )
    for name, step in steps:
        try:
            retry_once_if_lost(step, what=f"studio tick: {name}")
        except Exception:
            logger.exception("studio tick: %s failed; the other steps still run", name)
