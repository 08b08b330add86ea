"""Recovery: tasks no job follows any more, and tasks that waited too long.

Run every minute by the studio tick. A task whose lease ran out (its pump died) needs
no job of its own: any live pump claims it (generation.fleet.pump), so recovery only
makes sure pumps run. Harmless when nothing is stuck: the claim keeps each task to
one runner.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_noop

from .. import transitions
from ..models import ACTIVE_STATUSES, GenerationTask, TaskStatus
from ..task_text import text
from .dispatch import ensure_pumps

logger = logging.getLogger(__name__)

# An assigned task without a lease gets this long for a pump to claim it before recovery speaks of it.
UNCLAIMED_GRACE = timedelta(minutes=1)
BATCH = 500


def tasks_recover() -> int:
    """Make sure pumps run while assigned tasks have no live owner (a pump or worker
    died: they are claimed again), and fail tasks that waited too long for an
    unreachable backend. Returns how many tasks were without an owner."""
    now = timezone.now()
    stale = GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, backend__isnull=False).filter(
        Q(lease_until__lt=Now()) | Q(lease_until__isnull=True, assigned_at__lt=now - UNCLAIMED_GRACE)
    ).count()
    if stale:
        logger.info("%d task(s) without a live owner; a pump takes them", stale)
        ensure_pumps()

    limit = settings.EASEL_BACKEND_UNREACHABLE_TIMEOUT
    waited_too_long = GenerationTask.objects.filter(
        status=TaskStatus.PENDING, backend__isnull=True, waiting_since__lt=now - timedelta(seconds=limit)
    ).values_list("pk", flat=True)[:BATCH]
    for task_id in list(waited_too_long):
        transitions.give_up_waiting(task_id, code="backend_unreachable", message=text(
            gettext_noop("Backend unreachable: no backend could run this task for %(n)d s."), n=limit,
        ))
    return stale
