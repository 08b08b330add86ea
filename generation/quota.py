"""The daily image quota: how many images a user has used today, and the check before a task.

A day is a day in the studio's time zone (TIME_ZONE), like every date the pages show.
A task's images count on the day it was queued (created, or retried); failed and
cancelled tasks give theirs back. The check and the insert that follows it must run in
one transaction under `user_lock`, so concurrent requests cannot all pass one check.
"""
from __future__ import annotations

from datetime import datetime, time as dtime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.formats import time_format
from django.utils.translation import gettext as _, ngettext

from config.prepared import Prepared

from .errors import QuotaExceeded
from .models import ACTIVE_STATUSES, GenerationTask, TaskStatus

# Failed and cancelled tasks give their images back.
NOT_COUNTED = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def quota_day_start(now: datetime | None = None) -> datetime:
    """When today's quota began: midnight in the studio's time zone."""
    zone = timezone.get_default_timezone()
    today = timezone.localtime(now or timezone.now(), zone).date()
    return datetime.combine(today, dtime.min, tzinfo=zone)


def quota_resets_at(now: datetime | None = None) -> datetime:
    """The next midnight in the studio's time zone (a day may be 23 or 25 hours long)."""
    zone = timezone.get_default_timezone()
    tomorrow = quota_day_start(now).date() + timedelta(days=1)
    return datetime.combine(tomorrow, dtime.min, tzinfo=zone)


def _counted_today():
    return GenerationTask.objects.filter(queued_at__gte=quota_day_start()).exclude(status__in=NOT_COUNTED)


def images_used_today():
    """An annotation for a User queryset: the images each user used today (the admin's list)."""
    used = _counted_today().filter(user=OuterRef("pk")).order_by().values("user").annotate(n=Sum("batch_size"))
    return Coalesce(Subquery(used.values("n"), output_field=IntegerField()), Value(0))


def user_lock(user):
    """Hold the user's row until the transaction ends (call inside `transaction.atomic`);
    answers the user as stored now (staff may have changed the quota meanwhile).

    PostgreSQL: SELECT … FOR UPDATE, so one user's creates and retries pass the quota one
    at a time. SQLite: every transaction is IMMEDIATE (settings), which already takes the
    database's write lock at its start.
    """
    return get_user_model().objects.select_for_update().get(pk=user.pk)


# The sum every create takes under the user's lock, compiled once a day (config.prepared:
# building it cost several times what running it does); the day's start is part of the
# statement, so a new day compiles a new one.
_used_since: tuple[datetime, Prepared] | None = None


def _used_today(user) -> int:
    global _used_since
    start = quota_day_start()
    kept = _used_since
    if kept is None or kept[0] != start:
        kept = _used_since = (start, Prepared(
            lambda user_id: GenerationTask.objects.filter(queued_at__gte=start, user_id=user_id)
            .exclude(status__in=NOT_COUNTED).order_by().values("user_id").annotate(n=Sum("batch_size"))
            .values_list("n"), arguments=1))
    row = kept[1].first(user.pk)
    return (row[0] or 0) if row else 0


def quota_usage(*, user) -> dict:
    """Images counted against today's quota, and when it resets."""
    used = _used_today(user)
    limit = user.daily_image_quota
    return {
        "limit": limit,
        "used": used,
        "remaining": max(0, limit - used),
        "resets_at": quota_resets_at(),
        "in_flight": GenerationTask.objects.filter(user=user, status__in=ACTIVE_STATUSES).count(),
        "max_concurrent_tasks": user.max_concurrent_tasks,
    }


def quota_check(*, user, images: int) -> None:
    """Raise QuotaExceeded, saying what is left, unless `images` more fit in today's quota."""
    # One sum on the way that passes (every create takes it, under the user's lock); the
    # whole usage only for the message.
    if _used_today(user) + images <= user.daily_image_quota:
        return
    usage = quota_usage(user=user)
    left = usage["remaining"]
    resets = _("It resets at %(time)s.") % {
        "time": time_format(timezone.localtime(usage["resets_at"]), "H:i")
    }
    if left:
        message = ngettext(
            "%(left)d image left today; this request needs %(need)d.",
            "%(left)d images left today; this request needs %(need)d.",
            left,
        ) % {"left": left, "need": images}
    else:
        message = _("Today's image quota (%(limit)d) is used up.") % {"limit": usage["limit"]}
    # Translators: two sentences one after the other (Chinese puts no space between them).
    both = _("%(problem)s %(resets)s") % {"problem": message, "resets": resets}
    raise QuotaExceeded(both, resets_at=usage["resets_at"], limit=usage["limit"], used=usage["used"])
