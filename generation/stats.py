"""The numbers behind the staff dashboard. Queries only: nothing here writes.

Each function is bounded so the page stays quick with millions of tasks: counts are
grouped in the database over indexed ranges (status + created_at, completed_at), and
percentiles are taken on a bounded sample of the most recent finished tasks.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.functions import Coalesce, TruncDate, TruncHour
from django.utils import timezone

from .models import ACTIVE_STATUSES, TERMINAL_STATUSES, GeneratedImage, GenerationTask, TaskStatus

# Percentiles are read from at most this many recent tasks: enough for a stable p95,
# small enough to load in one go.
DURATION_SAMPLE = 5000
# Hourly buckets are shown for at most this many days (168 bars).
HOURLY_MAX_DAYS = 7
TOP_N = 10
OUTCOMES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    days: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def period_for(*, days: int, now: datetime | None = None) -> Period:
    now = now or timezone.now()
    return Period(start=now - timedelta(days=days), end=now, days=days)


def _ended_in(period: Period):
    # Finished tasks are counted where they ended: completed_at is set for every
    # final state (completed, failed, cancelled).
    return GenerationTask.objects.filter(
        status__in=TERMINAL_STATUSES, completed_at__gte=period.start, completed_at__lt=period.end
    )


def outcomes_by_bucket(*, period: Period, hourly: bool = False) -> list[dict]:
    """[{"bucket": date|datetime, "completed": n, "failed": n, "cancelled": n}, ...], gaps filled."""
    tz = timezone.get_current_timezone()
    if hourly:
        start = max(period.start, period.end - timedelta(days=HOURLY_MAX_DAYS))
        scoped = Period(start=start, end=period.end, days=min(period.days, HOURLY_MAX_DAYS))
        trunc = TruncHour("completed_at", tzinfo=tz)
    else:
        scoped = period
        trunc = TruncDate("completed_at", tzinfo=tz)
    rows = (
        _ended_in(scoped)
        .annotate(bucket=trunc)
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by("bucket")
    )
    counts: dict = defaultdict(lambda: {s: 0 for s in OUTCOMES})
    for row in rows:
        key = row["bucket"]
        if hourly and timezone.is_aware(key):
            key = timezone.localtime(key, tz)
        counts[key][row["status"]] = row["n"]
    out = []
    if hourly:
        cursor = timezone.localtime(scoped.start, tz).replace(minute=0, second=0, microsecond=0)
        end = timezone.localtime(scoped.end, tz)
        step = timedelta(hours=1)
    else:
        cursor = timezone.localtime(scoped.start, tz).date()
        end = timezone.localtime(scoped.end, tz).date()
        step = timedelta(days=1)
    while cursor <= end:
        values = counts.get(cursor, {s: 0 for s in OUTCOMES})
        out.append({"bucket": cursor, **{str(s): values[s] for s in OUTCOMES}})
        cursor += step
    return out


def outcome_totals(*, period: Period) -> dict:
    """Finished tasks in the period by outcome, and the success rate.

    The rate is completed / (completed + failed): a cancel is the user's choice, not
    a failure of the studio.
    """
    totals = {str(s): 0 for s in OUTCOMES}
    for row in _ended_in(period).values("status").annotate(n=Count("id")).order_by():
        totals[row["status"]] = row["n"]
    decided = totals["completed"] + totals["failed"]
    totals["success_rate"] = (totals["completed"] / decided) if decided else None
    return totals


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    if low == high:
        return sorted_values[low]
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def durations(*, period: Period, sample: int = DURATION_SAMPLE) -> dict:
    """Generation time (completed_at - started_at) p50/p95 by model and by backend.

    Read on the `sample` most recent completed tasks of the period, in Python, so it
    works the same on SQLite and PostgreSQL.
    """
    rows = (
        _ended_in(period)
        .filter(status=TaskStatus.COMPLETED, started_at__isnull=False)
        .order_by("-completed_at")
        .values_list("model_name", "backend__name", "started_at", "completed_at")[:sample]
    )
    by_model: dict[str, list[float]] = defaultdict(list)
    by_backend: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for model_name, backend_name, started, completed in rows:
        seconds = max(0.0, (completed - started).total_seconds())
        by_model[model_name].append(seconds)
        by_backend[backend_name or "-"].append(seconds)
        every.append(seconds)

    def summarise(groups: dict[str, list[float]]) -> list[dict]:
        out = []
        for name, values in groups.items():
            values.sort()
            out.append({"name": name, "count": len(values), "p50": percentile(values, 0.5),
                        "p95": percentile(values, 0.95)})
        return sorted(out, key=lambda r: (-r["count"], r["name"]))

    every.sort()
    return {
        "sampled": len(every),
        "p50": percentile(every, 0.5),
        "p95": percentile(every, 0.95),
        "by_model": summarise(by_model),
        "by_backend": summarise(by_backend),
    }


def queue_now(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    counts = {s: 0 for s in ACTIVE_STATUSES}
    for row in (
        GenerationTask.objects.filter(status__in=ACTIVE_STATUSES).values("status").annotate(n=Count("id")).order_by()
    ):
        counts[row["status"]] = row["n"]
    # (status, created_at) index: the oldest pending task is its first entry.
    oldest = GenerationTask.objects.filter(status=TaskStatus.PENDING).aggregate(t=Min("created_at"))["t"]
    return {
        "pending": counts[TaskStatus.PENDING],
        "processing": counts[TaskStatus.PROCESSING],
        "oldest_pending_at": oldest,
        "oldest_pending_seconds": (now - oldest).total_seconds() if oldest else None,
    }


def images(*, period: Period) -> dict:
    total = GeneratedImage.objects.aggregate(n=Count("id"), size=Coalesce(Sum("size_bytes"), 0))
    recent = GeneratedImage.objects.filter(created_at__gte=period.start, created_at__lt=period.end).aggregate(
        n=Count("id"), size=Coalesce(Sum("size_bytes"), 0)
    )
    return {"count": total["n"], "bytes": total["size"], "period_count": recent["n"], "period_bytes": recent["size"]}


def top_users(*, period: Period, limit: int = TOP_N) -> list[dict]:
    User = get_user_model()
    rows = (
        GenerationTask.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .values("user_id")
        .annotate(
            tasks=Count("id"),
            images=Coalesce(Sum("batch_size", filter=Q(status=TaskStatus.COMPLETED)), 0),
            failed=Count("id", filter=Q(status=TaskStatus.FAILED)),
        )
        .order_by("-tasks", "user_id")[:limit]
    )
    rows = list(rows)
    names = dict(User.objects.filter(pk__in=[r["user_id"] for r in rows]).values_list("pk", "username"))
    return [{"user_id": r["user_id"], "username": names.get(r["user_id"], "?"), **{k: r[k] for k in
             ("tasks", "images", "failed")}} for r in rows]


def top_models(*, period: Period, limit: int = TOP_N) -> list[dict]:
    rows = (
        GenerationTask.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .values("model_name")
        .annotate(
            tasks=Count("id"),
            completed=Count("id", filter=Q(status=TaskStatus.COMPLETED)),
            failed=Count("id", filter=Q(status=TaskStatus.FAILED)),
        )
        .order_by("-tasks", "model_name")[:limit]
    )
    return list(rows)


def backend_utilisation(*, period: Period) -> list[dict]:
    """Busy time / period per backend, from task timings (started_at → completed_at).

    Tasks that started before the period are left out and a task still running counts
    up to now: a small error at the edges, for one grouped query.
    """
    from models_catalog.models import ComfyBackend

    busy = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
    finished = dict(
        GenerationTask.objects.filter(
            backend__isnull=False, started_at__gte=period.start, completed_at__isnull=False,
            completed_at__lte=period.end,
        )
        .values("backend_id")
        .annotate(busy=Sum(busy))
        .order_by()
        .values_list("backend_id", "busy")
    )
    running: dict[int, float] = defaultdict(float)
    for backend_id, started in GenerationTask.objects.filter(
        status=TaskStatus.PROCESSING, backend__isnull=False, started_at__isnull=False
    ).values_list("backend_id", "started_at"):
        running[backend_id] += max(0.0, (period.end - max(started, period.start)).total_seconds())
    out = []
    for backend in ComfyBackend.objects.order_by("name"):
        seconds = (finished.get(backend.pk) or timedelta()).total_seconds() + running.get(backend.pk, 0.0)
        out.append({
            "name": backend.name,
            "state": backend.state,
            "is_demo": backend.is_demo,
            "busy_seconds": seconds,
            "utilisation": min(1.0, seconds / period.seconds) if period.seconds else 0.0,
        })
    return out


def workers() -> dict:
    """django-q2: clusters alive (heartbeats), queued jobs, the latest results."""
    from django_q.models import Failure, OrmQ, Success

    from .workers import worker_status

    status = worker_status()

    def recent(model):
        return [
            {"name": t.name, "func": t.func, "stopped": t.stopped, "seconds": t.time_taken()}
            for t in model.objects.order_by("-stopped").only("id", "name", "func", "started", "stopped")[:5]
        ]

    return {
        **status,
        "queued": OrmQ.objects.count(),
        "last_successes": recent(Success),
        "last_failures": recent(Failure),
    }


def dashboard_numbers(*, days: int) -> dict:
    period = period_for(days=days)
    return {
        "period": period,
        "per_day": outcomes_by_bucket(period=period),
        "per_hour": outcomes_by_bucket(period=period, hourly=True),
        "totals": outcome_totals(period=period),
        "durations": durations(period=period),
        "queue": queue_now(now=period.end),
        "images": images(period=period),
        "top_users": top_users(period=period),
        "top_models": top_models(period=period),
        "backends": backend_utilisation(period=period),
        "workers": workers(),
    }
