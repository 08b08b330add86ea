"""Easel's Prometheus series, computed from the database at each scrape.

Every number is read from the tables when Prometheus asks (no counter lives in a
process), so the answer is the same whichever gunicorn worker serves the scrape and
however many qcluster processes and hosts do the work: no multiprocess-mode files.
Each query is an aggregate on an index, bounded by the size of the queue, the fleet,
a recent window or a day, never by the size of the history, and none runs per task:

- the queue and the backends: the active tasks on the (status, created_at) index, the
  backend rows, the pumps' rows and django-q2's heartbeats;
- the finished-task counters: the hourly rollup (`TaskHourStat`, ops.rollup) up to its
  mark, summed once per mark and kept in this process (it changes once an hour), plus
  the tasks that ended since the mark on the completed_at index (about an hour's);
- the fail-over counter: the moved attempts (`TaskRun`) on a partial index that holds
  only those;
- webhook deliveries by state: the ended ones counted once per process, then only the
  deliveries since the oldest pending one (a primary-key range; `_EndedDeliveries`);
- the duration histograms: the tasks that ended in the last `WINDOW` (at most
  `SAMPLE` of them), bucketed here (see `_durations` for why they are gauge histograms);
- images today: the tasks completed since local midnight, the top `TOP_USERS` users.

Registered in its own `CollectorRegistry` (not prometheus_client's global one, which
would add this process's own Python and GC series: per-process numbers that mean
little behind a pool of workers).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeHistogramMetricFamily, \
    GaugeMetricFamily
from prometheus_client.registry import Collector

from models_catalog.models import ComfyBackend

from ..fleet.pump import pumps_alive
from ..fleet.workers import worker_status
from ..models import (
    ACTIVE_STATUSES, MOVE_ENDINGS, GenerationTask, TaskHourStat, TaskRun, TaskStatus, WebhookDelivery,
)
from . import rollup

# The duration histograms describe the tasks that ended this recently...
WINDOW = timedelta(minutes=15)
# ...read from at most this many of them (the most recent first).
SAMPLE = 5000
# Images today are shown for this many users (the busiest), plus the studio's total.
TOP_USERS = 10
# Bucket bounds in seconds: a queue wait runs from a moment to an hour; a generation
# from a second (a small demo picture) to the execution timeout (20 min by default).
WAIT_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
# A label for "no backend" (a task that never got one, or whose backend was deleted)
# and for "no reason" (a completed or cancelled task).
NONE = "none"


# --- the finished-task counters, rolled part kept per rollup mark ------------------------------------------------


class _RolledCounts:
    """The hourly rollup summed once per mark: rows below the mark never change, and the
    mark moves once an hour, so a scrape reads one small row (the mark) instead of
    summing a year of hours."""

    def __init__(self):
        self._lock = threading.Lock()
        self._mark: datetime | None = None
        self._rows: dict = {}

    def get(self, mark: datetime | None) -> dict:
        if mark is None:
            return {}
        with self._lock:
            if mark != self._mark:
                rows = (TaskHourStat.objects.filter(hour__lt=mark)
                        .values("status", "error_code", "model_name", "backend_id")
                        .annotate(n=Sum("tasks"), images=Sum("images")).order_by())
                self._rows = {(r["status"], r["error_code"], r["model_name"], r["backend_id"]):
                              (r["n"], r["images"]) for r in rows}
                self._mark = mark
            return self._rows

    def clear(self) -> None:
        with self._lock:
            self._mark, self._rows = None, {}


rolled_counts = _RolledCounts()


def finished_counts(*, now: datetime) -> dict:
    """(status, error_code, model_name, backend_id) → (tasks, images), since the beginning."""
    mark = rollup.mark(rollup.HOURS)
    counts: dict = defaultdict(lambda: [0, 0])
    for key, (n, images) in rolled_counts.get(mark).items():
        counts[key][0] += n
        counts[key][1] += images
    # Before the first rollup (a new studio) every finished task is counted here.
    live = rollup.ended_between(mark, now) if mark else GenerationTask.objects.filter(
        status__in=(TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED), completed_at__lt=now)
    rows = (live.values("status", "error_code", "model_name", "backend_id")
            .annotate(n=Count("id"), images=Coalesce(Sum("batch_size", filter=Q(status=TaskStatus.COMPLETED)), 0))
            .order_by())
    for r in rows:
        key = (r["status"], r["error_code"], r["model_name"], r["backend_id"])
        counts[key][0] += r["n"]
        counts[key][1] += r["images"]
    return counts


# --- webhook deliveries, ended ones counted once per process -----------------------------------------------------


class _EndedDeliveries:
    """Delivered and failed deliveries below a floor id, counted once and then in steps.

    A delivery's state is final once it is delivered or failed, and ids only grow, so the
    deliveries below the oldest one still pending (or created in the last minute: one
    whose transaction has not committed yet may hold a lower id than a visible one) are
    settled. Each scrape counts only the deliveries from the last floor on, a primary-key
    range over the recent ones, instead of the whole table. A process started later
    counts the same rows, save those a user's deletion removed since (this process keeps
    counting them).
    """

    # Longer than any transaction that creates a delivery stays open.
    SETTLE_AFTER = timedelta(minutes=1)

    def __init__(self):
        self._lock = threading.Lock()
        self._floor = 0
        self._settled: dict = defaultdict(int)

    def get(self, *, now: datetime) -> dict:
        State = WebhookDelivery.State
        with self._lock:
            recent = WebhookDelivery.objects.filter(id__gte=self._floor)
            floor = recent.filter(Q(state=State.PENDING) | Q(created_at__gte=now - self.SETTLE_AFTER)).aggregate(
                m=Min("id"))["m"]
            if floor is None:
                top = recent.aggregate(m=Max("id"))["m"]
                floor = top + 1 if top is not None else self._floor
            if floor > self._floor:
                for r in (WebhookDelivery.objects.filter(id__gte=self._floor, id__lt=floor)
                          .values("state").annotate(n=Count("id")).order_by()):
                    self._settled[r["state"]] += r["n"]
                self._floor = floor
            counts = {state: self._settled.get(state, 0) for state in State.values}
            for r in WebhookDelivery.objects.filter(id__gte=floor).values("state").annotate(n=Count("id")).order_by():
                counts[r["state"]] += r["n"]
            return counts

    def clear(self) -> None:
        with self._lock:
            self._floor, self._settled = 0, defaultdict(int)


ended_deliveries = _EndedDeliveries()


def delivery_counts(*, now: datetime) -> dict:
    """state → deliveries in that state (pending ones as they are now)."""
    return ended_deliveries.get(now=now)


# --- the collector -----------------------------------------------------------------------------------------------


def _buckets(values: list[float], bounds: tuple) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, then +Inf (Prometheus' `le` buckets)."""
    values = sorted(values)
    out, i = [], 0
    for bound in bounds:
        while i < len(values) and values[i] <= bound:
            i += 1
        out.append((str(float(bound)), i))
    out.append(("+Inf", len(values)))
    return out


class EaselCollector(Collector):
    """Everything on /metrics, read fresh at each scrape."""

    def collect(self):
        started = time.monotonic()
        now = timezone.now()
        backends = list(ComfyBackend.objects.values("pk", "name", "enabled", "is_online", "draining", "max_in_flight")
                        .order_by("name"))
        names = {b["pk"]: b["name"] for b in backends}

        def backend(pk) -> str:
            return names.get(pk, NONE) if pk is not None else NONE

        yield from self._queue(now, backend)
        yield from self._backends(backends)
        yield from self._finished(now, backend)
        yield from self._moves()
        yield from self._webhooks(now)
        yield from self._durations(now, backend)
        yield from self._images_today(now)
        yield from self._workers()
        yield GaugeMetricFamily("easel_metrics_collect_seconds",
                                "Seconds this scrape spent reading the database.", value=time.monotonic() - started)

    def _queue(self, now, backend):
        waiting = GaugeMetricFamily(
            "easel_tasks_waiting", "Tasks in Easel's queue with no backend yet, per model.", labels=["model"])
        assigned = GaugeMetricFamily(
            "easel_tasks_assigned", "Tasks given to a backend and not started there yet, per backend.",
            labels=["backend"])
        running = GaugeMetricFamily(
            "easel_tasks_running", "Tasks submitted to a backend (status processing), per backend.", labels=["backend"])
        by_model: dict = defaultdict(int)
        by_assigned: dict = defaultdict(int)
        by_running: dict = defaultdict(int)
        # One grouped read of the active tasks ((status, created_at) index): its size is
        # the queue's, never the history's.
        for r in (GenerationTask.objects.filter(status__in=ACTIVE_STATUSES)
                  .values("status", "model_name", "backend_id").annotate(n=Count("id")).order_by()):
            if r["status"] == TaskStatus.PROCESSING:
                by_running[backend(r["backend_id"])] += r["n"]
            elif r["backend_id"] is None:
                by_model[r["model_name"]] += r["n"]
            else:
                by_assigned[backend(r["backend_id"])] += r["n"]
        for name, n in sorted(by_model.items()):
            waiting.add_metric([name], n)
        for name, n in sorted(by_assigned.items()):
            assigned.add_metric([name], n)
        for name, n in sorted(by_running.items()):
            running.add_metric([name], n)
        oldest = GenerationTask.objects.filter(status=TaskStatus.PENDING).aggregate(t=Min("created_at"))["t"]
        yield waiting
        yield assigned
        yield running
        yield GaugeMetricFamily(
            "easel_tasks_oldest_waiting_seconds", "Age of the oldest pending task (0 when none waits).",
            value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    def _backends(self, backends):
        up = GaugeMetricFamily(
            "easel_backend_up", "1 when the backend answered its last health check, else 0 (enabled backends).",
            labels=["backend"])
        draining = GaugeMetricFamily(
            "easel_backend_draining", "1 while staff drain the backend (it finishes its work, takes no new).",
            labels=["backend"])
        capacity = GaugeMetricFamily(
            "easel_backend_capacity", "Tasks the backend may hold at once (its configured tasks in flight).",
            labels=["backend"])
        for b in backends:
            if not b["enabled"]:
                continue
            up.add_metric([b["name"]], 1 if b["is_online"] else 0)
            draining.add_metric([b["name"]], 1 if b["draining"] else 0)
            capacity.add_metric([b["name"]], b["max_in_flight"])
        yield up
        yield draining
        yield capacity

    def _finished(self, now, backend):
        tasks = CounterMetricFamily(
            "easel_tasks_finished",
            "Tasks that ended, by status (completed, failed, cancelled), reason (the failure's error code; none "
            "otherwise), model and backend. From the hourly rollup, which outlives deleted tasks, plus the tasks "
            "that ended since it: a task deleted or retried within about an hour of its end leaves the count, "
            "which Prometheus reads as a counter reset.",
            labels=["status", "reason", "model", "backend"])
        images = CounterMetricFamily(
            "easel_images_generated",
            "Images of completed tasks, by model and backend (counted like easel_tasks_finished_total).",
            labels=["model", "backend"])
        by_labels: dict = defaultdict(int)
        images_by: dict = defaultdict(int)
        for (status, code, model, backend_id), (n, done) in finished_counts(now=now).items():
            name = backend(backend_id)
            by_labels[(status, code or NONE, model, name)] += n
            if status == TaskStatus.COMPLETED:
                images_by[(model, name)] += done
        for labels, n in sorted(by_labels.items()):
            tasks.add_metric(list(labels), n)
        for labels, n in sorted(images_by.items()):
            images.add_metric(list(labels), n)
        yield tasks
        yield images

    def _moves(self):
        moves = CounterMetricFamily(
            "easel_task_failovers",
            "Attempts moved off a backend: kind fail_over (submitted, the backend stayed away past the grace "
            "period) or hand_back (nothing sent yet, the backend unreachable), by the backend left. Counted from "
            "the attempts' rows: deleting a task removes its attempts from the count.",
            labels=["backend", "kind"])
        # The filter is the partial index's own condition, so only the moves are read.
        for r in (TaskRun.objects.filter(ended_by__in=MOVE_ENDINGS).values("ended_by", "backend_name")
                  .annotate(n=Count("id")).order_by("backend_name", "ended_by")):
            moves.add_metric([r["backend_name"] or NONE, r["ended_by"]], r["n"])
        yield moves

    def _webhooks(self, now):
        counts = delivery_counts(now=now)
        ended = CounterMetricFamily(
            "easel_webhook_deliveries",
            "Webhook deliveries that ended: delivered, or failed after their last attempt. Counted from the "
            "delivery rows, which Easel keeps (deleting a user removes theirs).", labels=["state"])
        for state in (WebhookDelivery.State.DELIVERED, WebhookDelivery.State.FAILED):
            ended.add_metric([state], counts[state])
        yield ended
        yield GaugeMetricFamily("easel_webhook_deliveries_pending",
                                "Webhook deliveries not sent yet or waiting for their next attempt.",
                                value=counts[WebhookDelivery.State.PENDING])

    def _durations(self, now, backend):
        """Gauge histograms of the tasks that ended in the last WINDOW.

        The rollups keep no buckets, and a histogram counted from the rows themselves could
        not stay monotonic (a retry clears a task's times, a delete removes it), so these
        are Prometheus' *gauge* histograms: the distribution over a sliding window, read
        with `histogram_quantile(0.95, sum by (le) (easel_task_run_seconds_bucket))`
        without `rate()`. Bounded by the window and SAMPLE, on the completed_at index.
        """
        wait = GaugeHistogramMetricFamily(
            "easel_task_wait_seconds",
            f"Queue wait (queued to started) of the tasks that started and ended in the last "
            f"{int(WINDOW.total_seconds() // 60)} minutes, by model and backend (a gauge histogram over that window).",
            labels=["model", "backend"])
        run = GaugeHistogramMetricFamily(
            "easel_task_run_seconds",
            f"Generation time (started to completed) of the tasks that completed in the last "
            f"{int(WINDOW.total_seconds() // 60)} minutes, by model and backend (a gauge histogram over that window).",
            labels=["model", "backend"])
        waits: dict = defaultdict(list)
        runs: dict = defaultdict(list)
        rows = (rollup.ended_between(now - WINDOW, now).filter(started_at__isnull=False)
                .order_by("-completed_at")
                .values_list("status", "model_name", "backend_id", "queued_at", "started_at", "completed_at")[:SAMPLE])
        for status, model, backend_id, queued, started_at, completed in rows:
            key = (model, backend(backend_id))
            waits[key].append(max(0.0, (started_at - queued).total_seconds()))
            if status == TaskStatus.COMPLETED:
                runs[key].append(max(0.0, (completed - started_at).total_seconds()))
        for key, values in sorted(waits.items()):
            wait.add_metric(list(key), _buckets(values, WAIT_BUCKETS), sum(values))
        for key, values in sorted(runs.items()):
            run.add_metric(list(key), _buckets(values, RUN_BUCKETS), sum(values))
        yield wait
        yield run

    def _images_today(self, now):
        # Bounded cardinality: the busiest TOP_USERS users get a series each (their
        # usernames: /metrics is for staff), the rest only count in the total.
        start = rollup.day_start(rollup.local_day(now))
        today = GenerationTask.objects.filter(completed_at__gte=start, status=TaskStatus.COMPLETED)
        total = today.aggregate(n=Coalesce(Sum("batch_size"), 0))["n"]
        top = list(today.values("user_id").annotate(n=Sum("batch_size")).order_by("-n", "user_id")[:TOP_USERS])
        usernames = dict(get_user_model().objects.filter(pk__in=[r["user_id"] for r in top])
                         .values_list("pk", "username"))
        per_user = GaugeMetricFamily(
            "easel_user_images_today",
            f"Images generated since midnight (the studio's time zone) by the {TOP_USERS} users with the most.",
            labels=["user"])
        for r in top:
            per_user.add_metric([usernames.get(r["user_id"], str(r["user_id"]))], r["n"])
        yield per_user
        yield GaugeMetricFamily("easel_images_today",
                                "Images generated since midnight (the studio's time zone), all users.", value=total)

    def _workers(self):
        status = worker_status()
        yield GaugeMetricFamily("easel_cluster_up", "1 while at least one django-q2 cluster writes its heartbeat.",
                                value=1 if status["alive"] else 0)
        yield GaugeMetricFamily("easel_clusters", "django-q2 clusters with a live heartbeat.",
                                value=len(status["clusters"]))
        yield GaugeMetricFamily("easel_workers", "Worker processes of the live django-q2 clusters.",
                                value=sum(c["workers"] for c in status["clusters"]))
        yield GaugeMetricFamily("easel_pumps_alive", "Pumps (the jobs that follow prompts) with a fresh heartbeat.",
                                value=pumps_alive().count())


registry = CollectorRegistry(auto_describe=False)
registry.register(EaselCollector())
