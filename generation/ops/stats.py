"""The numbers behind the staff dashboard. Queries only: nothing here writes.

Each function is bounded so the page stays quick with millions of tasks: finished
tasks are read from the rollups (generation.ops.rollup) up to their marks and counted live
only after them, the queue from the status index, and percentiles from a bounded
sample of the most recent finished tasks.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.models import Failure, OrmQ, Success

from models_catalog.models import ComfyBackend

from ..fleet.workers import worker_status
from ..models import ACTIVE_STATUSES, GeneratedImage, GenerationTask, TaskHourStat, TaskStatus, UserDayStat
from . import rollup

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
    # The start is on the hour: the hourly rollup answers whole hours.
    return Period(start=rollup.floor_hour(now - timedelta(days=days)), end=now, days=days)


def _ended_in(period: Period):
    # Finished tasks are counted where they ended: completed_at is set for every
    # final state (completed, failed, cancelled).
    return rollup.ended_between(period.start, period.end)


@dataclass
class Activity:
    """The tasks that ended in a period: per UTC hour and outcome, per model and
    outcome, and busy seconds per backend id."""

    by_hour: dict = field(default_factory=lambda: defaultdict(Counter))
    by_model: dict = field(default_factory=lambda: defaultdict(Counter))
    busy: dict = field(default_factory=lambda: defaultdict(float))


def activity(*, period: Period) -> Activity:
    """Read from the hourly rollup up to its mark, and live from the tasks after it
    (normally the last hour or so: a few hundred rows on the completed_at index)."""
    act = Activity()
    until = rollup.mark(rollup.HOURS)
    split = max(period.start, min(until, rollup.floor_hour(period.end))) if until else period.start
    if split > period.start:
        rolled = TaskHourStat.objects.filter(hour__gte=period.start, hour__lt=split)
        for row in rolled.values("hour", "status").annotate(n=Sum("tasks")).order_by():
            act.by_hour[row["hour"]][row["status"]] += row["n"]
        for row in rolled.values("model_name", "status").annotate(n=Sum("tasks")).order_by():
            act.by_model[row["model_name"]][row["status"]] += row["n"]
        for row in rolled.values("backend_id").annotate(seconds=Sum("busy_seconds")).order_by():
            act.busy[row["backend_id"]] += row["seconds"] or 0.0
    for row in rollup.ended_by_hour(split, period.end):
        act.by_hour[row["hour"]][row["status"]] += row["tasks"]
        act.by_model[row["model_name"]][row["status"]] += row["tasks"]
        act.busy[row["backend_id"]] += row["busy_seconds"]
    return act


def outcomes_by_bucket(act: Activity, *, period: Period, hourly: bool = False) -> list[dict]:
    """[{"bucket": date|datetime, "completed": n, "failed": n, "cancelled": n}, ...], gaps filled.

    Days and hours are the studio's local ones (the current time zone).
    """
    tz = timezone.get_current_timezone()
    start = max(period.start, rollup.floor_hour(period.end - timedelta(days=HOURLY_MAX_DAYS))) if hourly \
        else period.start
    counts: dict = defaultdict(Counter)
    for hour, by_status in act.by_hour.items():
        if hour >= start:
            local = timezone.localtime(hour, tz)
            counts[local if hourly else local.date()].update(by_status)
    if hourly:
        # Walk in UTC so a daylight-saving change neither skips nor repeats an hour.
        buckets, cursor = [], start
        while cursor <= period.end:
            buckets.append(timezone.localtime(cursor, tz))
            cursor += timedelta(hours=1)
    else:
        day, last = timezone.localtime(start, tz).date(), timezone.localtime(period.end, tz).date()
        buckets = []
        while day <= last:
            buckets.append(day)
            day += timedelta(days=1)
    return [{"bucket": b, **{str(s): counts[b][s] for s in OUTCOMES}} for b in buckets]


def outcome_totals(act: Activity) -> dict:
    """Finished tasks by outcome, and the success rate.

    The rate is completed / (completed + failed): a cancel is the user's choice, not
    a failure of the studio.
    """
    totals = {str(s): 0 for s in OUTCOMES}
    for by_status in act.by_hour.values():
        for s in OUTCOMES:
            totals[str(s)] += by_status[s]
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


def _active_since(period: Period, key: str) -> dict:
    """Tasks waiting or running now that were created in the period, per `key`."""
    rows = (
        GenerationTask.objects.filter(status__in=ACTIVE_STATUSES, created_at__gte=period.start)
        .values(key).annotate(n=Count("id")).order_by()
    )
    return {row[key]: row["n"] for row in rows}


def top_users(*, period: Period, limit: int = TOP_N) -> list[dict]:
    """Users by tasks in the period: those that ended in it plus those still active.

    Whole days come from the per-user daily rollup; the partial first day and the
    days after the rollup's mark are counted live.
    """
    User = get_user_model()
    first_full = rollup.day_start(rollup.local_day(period.start))
    if first_full < period.start:
        first_full = rollup.day_start(rollup.local_day(period.start) + timedelta(days=1))
    until = rollup.mark(rollup.DAYS)
    rolled_to = min(until, rollup.day_start(rollup.local_day(period.end))) if until else first_full
    totals: dict[int, Counter] = defaultdict(Counter)
    if rolled_to > first_full:
        rows = (
            UserDayStat.objects.filter(day__gte=rollup.local_day(first_full), day__lt=rollup.local_day(rolled_to))
            .values("user_id").annotate(t=Sum("tasks"), i=Sum("images"), f=Sum("failed")).order_by()
        )
        for row in rows:
            totals[row["user_id"]].update({"tasks": row["t"], "images": row["i"], "failed": row["f"]})
        live = Q(completed_at__gte=period.start, completed_at__lt=first_full) | Q(
            completed_at__gte=rolled_to, completed_at__lt=period.end)
    else:
        live = Q(completed_at__gte=period.start, completed_at__lt=period.end)
    for row in rollup.ended_by_user(live):
        totals[row["user_id"]].update({k: row[k] for k in ("tasks", "images", "failed")})
    for user_id, n in _active_since(period, "user_id").items():
        totals[user_id]["tasks"] += n
    top = sorted(totals.items(), key=lambda item: (-item[1]["tasks"], item[0]))[:limit]
    names = dict(User.objects.filter(pk__in=[user_id for user_id, _c in top]).values_list("pk", "username"))
    return [{"user_id": user_id, "username": names.get(user_id, "?"), "tasks": c["tasks"], "images": c["images"],
             "failed": c["failed"]} for user_id, c in top]


def top_models(act: Activity, *, period: Period, limit: int = TOP_N) -> list[dict]:
    """Models by tasks in the period: those that ended in it plus those still active."""
    active = _active_since(period, "model_name")
    rows = [
        {"model_name": name, "tasks": sum(act.by_model[name].values()) + active.get(name, 0),
         "completed": act.by_model[name][TaskStatus.COMPLETED], "failed": act.by_model[name][TaskStatus.FAILED]}
        for name in set(act.by_model) | set(active)
    ]
    return sorted(rows, key=lambda r: (-r["tasks"], r["model_name"]))[:limit]


def backend_utilisation(act: Activity, *, period: Period) -> list[dict]:
    """Busy time / period per backend, from task timings (started_at → completed_at).

    A finished task counts whole in the hour it ended, and a task still running counts
    up to now: a small error at the edges of the period, for numbers that roll up.
    """
    running: dict[int, float] = defaultdict(float)
    for backend_id, started in GenerationTask.objects.filter(
        status=TaskStatus.PROCESSING, backend__isnull=False, started_at__isnull=False
    ).values_list("backend_id", "started_at"):
        running[backend_id] += max(0.0, (period.end - max(started, period.start)).total_seconds())
    out = []
    for backend in ComfyBackend.objects.order_by("name"):
        seconds = act.busy.get(backend.pk, 0.0) + running.get(backend.pk, 0.0)
        out.append({
            "name": backend.name,
            "state": backend.state,
            "state_label": backend.state_label,
            "is_demo": backend.is_demo,
            "busy_seconds": seconds,
            "utilisation": min(1.0, seconds / period.seconds) if period.seconds else 0.0,
        })
    return out


def workers() -> dict:
    """django-q2: clusters alive (heartbeats), queued jobs, the latest results."""
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
    act = activity(period=period)
    return {
        "period": period,
        "per_day": outcomes_by_bucket(act, period=period),
        "per_hour": outcomes_by_bucket(act, period=period, hourly=True),
        "totals": outcome_totals(act),
        "durations": durations(period=period),
        "queue": queue_now(now=period.end),
        "images": images(period=period),
        "top_users": top_users(period=period),
        "top_models": top_models(act, period=period),
        "backends": backend_utilisation(act, period=period),
        "workers": workers(),
    }
