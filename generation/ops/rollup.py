"""Dashboard rollups: finished tasks summed per hour and per user-day, once a period is over.

The dashboard must stay quick with millions of tasks, and grouping them by hour on
every page view does not (about a second on PostgreSQL with a million rows). So the
studio tick writes, for each hour that is over, one row per (outcome, model, backend)
into `TaskHourStat`, and for each day that is over one row per user into
`UserDayStat`; a `RollupMark` says how far each has gone. The dashboard reads the
rollup up to its mark and counts only the tasks that ended after it live, with the
same grouping queries defined here, so the two can never disagree on a definition.

A task's `completed_at` is set by the worker as it commits the final state, so a
period is rolled up only `GRACE` after it ends: nothing can still arrive in it then.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django.db import transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from ..fleet import locks
from ..models import TERMINAL_STATUSES, GenerationTask, RollupMark, TaskHourStat, TaskStatus, UserDayStat

logger = logging.getLogger(__name__)

HOURS, DAYS = "hours", "days"
GRACE = timedelta(minutes=5)
# One tick catches up at most this much, so the first rollup of a large existing
# database is spread over a few ticks instead of holding one for a long time.
HOURS_PER_RUN = 24 * 31
DAYS_PER_RUN = 31

_BUSY = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())


# --- time ---------------------------------------------------------------------------------------------------------


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def day_start(day: date) -> datetime:
    """Midnight of `day` in the studio's time zone, as an aware datetime."""
    return datetime.combine(day, time(), tzinfo=timezone.get_default_timezone())


def local_day(moment: datetime) -> date:
    return timezone.localtime(moment, timezone.get_default_timezone()).date()


# --- the grouping queries (shared by the rollup and the dashboard's live part) ------------------------------------


def ended_between(start: datetime, end: datetime):
    return GenerationTask.objects.filter(
        status__in=TERMINAL_STATUSES, completed_at__gte=start, completed_at__lt=end
    )


def ended_by_hour(start: datetime, end: datetime) -> list[dict]:
    """Tasks that ended in [start, end), per UTC hour, outcome, error code, model and backend."""
    rows = (
        ended_between(start, end)
        .annotate(hour=TruncHour("completed_at", tzinfo=dt_timezone.utc))
        .values("hour", "status", "error_code", "model_name", "backend_id")
        .annotate(
            n=Count("id"),
            done_images=Coalesce(Sum("batch_size", filter=Q(status=TaskStatus.COMPLETED)), 0),
            busy=Sum(_BUSY, filter=Q(started_at__isnull=False)),
        )
        .order_by()
    )
    return [
        {"hour": r["hour"], "status": r["status"], "error_code": r["error_code"], "model_name": r["model_name"],
         "backend_id": r["backend_id"],
         "tasks": r["n"], "images": r["done_images"], "busy_seconds": r["busy"].total_seconds() if r["busy"] else 0.0}
        for r in rows
    ]


def ended_by_user(where: Q) -> list[dict]:
    """Finished tasks matching `where`, per user: tasks, images (completed), failed."""
    rows = (
        GenerationTask.objects.filter(where, status__in=TERMINAL_STATUSES)
        .values("user_id")
        .annotate(
            n=Count("id"),
            done_images=Coalesce(Sum("batch_size", filter=Q(status=TaskStatus.COMPLETED)), 0),
            n_failed=Count("id", filter=Q(status=TaskStatus.FAILED)),
        )
        .order_by()
    )
    return [{"user_id": r["user_id"], "tasks": r["n"], "images": r["done_images"], "failed": r["n_failed"]}
            for r in rows]


# --- marks --------------------------------------------------------------------------------------------------------


def mark(name: str) -> datetime | None:
    return RollupMark.objects.filter(name=name).values_list("until", flat=True).first()


def _set_mark(name: str, until: datetime) -> None:
    RollupMark.objects.update_or_create(name=name, defaults={"until": until})


def _first_end() -> datetime | None:
    # Served by the completed_at index. Tasks sent back by a retry have it cleared.
    return GenerationTask.objects.filter(completed_at__isnull=False).aggregate(t=Min("completed_at"))["t"]


# --- the rollup ---------------------------------------------------------------------------------------------------


@dataclass
class Rolled:
    hours: int = 0
    hour_rows: int = 0
    days: int = 0
    day_rows: int = 0


def roll_up(*, now: datetime | None = None) -> Rolled:
    """Sum up every hour and every day that is over and not summed yet (bounded per call).

    Safe to run from several workers at once: one transaction behind a lock, and each
    mark moves in the same transaction as the rows it covers.
    """
    now = now or timezone.now()
    done = Rolled()
    with transaction.atomic():
        locks.transaction_lock(locks.STATS_ROLLUP)
        # Read once, under the lock: no other rollup can move them now.
        hours_mark, days_mark = mark(HOURS), mark(DAYS)
        first = None if hours_mark and days_mark else _first_end()
        _roll_hours(now, hours_mark or (floor_hour(first) if first else None), done)
        _roll_days(now, days_mark or (day_start(local_day(first)) if first else None), done)
    if done.hours or done.days:
        logger.info("stats rollup: %d hour(s) → %d row(s), %d day(s) → %d row(s)",
                    done.hours, done.hour_rows, done.days, done.day_rows)
    return done


def _roll_hours(now: datetime, start: datetime | None, done: Rolled) -> None:
    if start is None:
        return  # nothing has ever finished: no mark yet, so nothing can be skipped later
    end = min(floor_hour(now - GRACE), start + timedelta(hours=HOURS_PER_RUN))
    if end <= start:
        return
    rows = ended_by_hour(start, end)
    TaskHourStat.objects.bulk_create([TaskHourStat(**r) for r in rows], batch_size=1000)
    _set_mark(HOURS, end)
    done.hours, done.hour_rows = int((end - start) / timedelta(hours=1)), len(rows)


def _roll_days(now: datetime, start: datetime | None, done: Rolled) -> None:
    if start is None:
        return
    target = day_start(local_day(now - GRACE))
    while start < target and done.days < DAYS_PER_RUN:
        day = local_day(start)
        end = day_start(day + timedelta(days=1))
        rows = ended_by_user(Q(completed_at__gte=start, completed_at__lt=end))
        # A conflict is only possible after TIME_ZONE changed (two periods on one date);
        # keeping the first is better than stopping the rollup for good.
        UserDayStat.objects.bulk_create([UserDayStat(day=day, **r) for r in rows], batch_size=1000,
                                        ignore_conflicts=True)
        start = end
        done.days += 1
        done.day_rows += len(rows)
    if done.days:
        _set_mark(DAYS, start)
