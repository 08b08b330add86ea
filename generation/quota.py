"""The daily image quota: how many images a user has used today, and the check before a task."""
from __future__ import annotations

from datetime import datetime, time as dtime, timedelta, timezone as dt_timezone

from django.db.models import IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from .errors import QuotaExceeded
from .models import ACTIVE_STATUSES, GenerationTask, TaskStatus

# Failed and cancelled tasks give their images back.
NOT_COUNTED = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def quota_day_start(now: datetime | None = None) -> datetime:
    """When today's quota began (quotas reset at UTC midnight)."""
    now = now or timezone.now()
    return datetime.combine(now.astimezone(dt_timezone.utc).date(), dtime.min, tzinfo=dt_timezone.utc)


def _counted_today():
    return GenerationTask.objects.filter(created_at__gte=quota_day_start()).exclude(status__in=NOT_COUNTED)


def images_used_today():
    """An annotation for a User queryset: the images each user used today (the admin's list)."""
    used = _counted_today().filter(user=OuterRef("pk")).order_by().values("user").annotate(n=Sum("batch_size"))
    return Coalesce(Subquery(used.values("n"), output_field=IntegerField()), Value(0))


def quota_usage(*, user) -> dict:
    """Images counted against today's quota, and when it resets.

    A task counts from the moment it is accepted; failed and cancelled ones give their
    images back.
    """
    used = _counted_today().filter(user=user).aggregate(n=Sum("batch_size"))["n"] or 0
    limit = user.daily_image_quota
    return {
        "limit": limit,
        "used": used,
        "remaining": max(0, limit - used),
        "resets_at": quota_day_start() + timedelta(days=1),
        "in_flight": GenerationTask.objects.filter(user=user, status__in=ACTIVE_STATUSES).count(),
        "max_concurrent_tasks": user.max_concurrent_tasks,
    }


def quota_check(*, user, images: int) -> None:
    usage = quota_usage(user=user)
    if usage["used"] + images > usage["limit"]:
        raise QuotaExceeded(
            _("Daily image quota reached (%(used)d of %(limit)d used). It resets at %(time)s UTC.")
            % {"used": usage["used"], "limit": usage["limit"], "time": usage["resets_at"].strftime("%H:%M")},
            resets_at=usage["resets_at"],
            limit=usage["limit"],
            used=usage["used"],
        )
