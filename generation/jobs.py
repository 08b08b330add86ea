"""django-q2 jobs: thin wrappers that load by id and call a service."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

logger = logging.getLogger(__name__)


def generation_run(task_id: int) -> None:
    from .runner import task_run

    task_run(task_id=task_id)


def generation_abandon(backend_id: int, prompt_id: str) -> None:
    from .services import generation_abandon as abandon

    abandon(backend_id=backend_id, prompt_id=prompt_id)


def generation_finished(task_id: int) -> None:
    """After a task ends: send its webhook, let the dispatcher use the freed capacity."""
    from .dispatch import dispatch
    from .webhooks import webhook_enqueue_for_task

    try:
        dispatch()
    finally:
        # Freed capacity first; a webhook problem must not hold back the queue.
        webhook_enqueue_for_task(task_id=task_id)


def generation_dispatch() -> None:
    from .dispatch import dispatch

    dispatch()


def generation_recover() -> int:
    """Re-enqueue assigned tasks that no job holds (a worker died, a job was lost), and
    fail tasks that waited too long for an unreachable backend.

    Harmless when nothing is stuck: the job's claim keeps each task to one runner.
    """
    from django.conf import settings
    from django.db.models import Q
    from django.utils.translation import gettext_noop

    from .dispatch import _enqueue_runs
    from .models import ACTIVE_STATUSES, GenerationTask, TaskStatus
    from .services import task_finished
    from .task_text import message_fields, text

    now = timezone.now()
    stale = GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, assigned_at__lt=now - timedelta(minutes=10))
    )
    ids = list(stale.order_by("created_at").values_list("pk", flat=True)[:500])
    _enqueue_runs(ids)
    if ids:
        logger.info("re-enqueued %d stale task(s)", len(ids))

    limit = timedelta(seconds=settings.EASEL_BACKEND_UNREACHABLE_TIMEOUT)
    for task in GenerationTask.objects.filter(
        status=TaskStatus.PENDING, backend__isnull=True, waiting_since__lt=now - limit
    )[:500]:
        if GenerationTask.objects.filter(pk=task.pk, status=TaskStatus.PENDING, backend__isnull=True).update(
            status=TaskStatus.FAILED,
            error_code="backend_unreachable",
            **message_fields("error", text(
                gettext_noop("Backend unreachable: no backend could run this task for %(n)d s."),
                n=settings.EASEL_BACKEND_UNREACHABLE_TIMEOUT,
            )),
            status_message="",
            completed_at=now,
        ):
            task_finished(task=task)
    return len(ids)


def studio_tick() -> None:
    """The periodic housekeeping (a django-q2 schedule): backend health, recovery, dispatch,
    webhook retries, the dashboard's rollup."""
    from models_catalog.services import backends_health_check, checkpoints_sync

    from .dispatch import dispatch
    from .rollup import roll_up
    from .webhooks import webhook_retry_due

    checked = backends_health_check()
    # Keep each backend's checkpoint list current (models added or removed on the server).
    checkpoints_sync(backends=[b for b in checked if b.is_online])
    generation_recover()
    dispatch()
    webhook_retry_due()
    roll_up()
