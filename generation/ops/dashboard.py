"""The staff dashboard in the admin: activity, timings, queue, storage, workers, doctor.

Charts are inline SVG drawn by the template from geometry computed here (no JS
library, no CDN); `?format=csv` gives the same numbers as a CSV file.
"""
from __future__ import annotations

import csv
from datetime import date

from django.contrib import admin
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from ..fleet.holdings import backends_held
from ..fleet.pump import pumps_alive
from . import stats
from .doctor import run_checks

PERIODS = (1, 7, 30, 90)
DEFAULT_DAYS = 7
MAX_DAYS = 365
CHART_WIDTH, CHART_HEIGHT = 720, 160
SERIES = (("completed", "completed"), ("failed", "failed"), ("cancelled", "cancelled"))


def _days(request) -> int:
    try:
        days = int(request.GET.get("days", DEFAULT_DAYS))
    except ValueError:
        days = DEFAULT_DAYS
    return max(1, min(MAX_DAYS, days))


def _label(bucket) -> str:
    if isinstance(bucket, date) and not hasattr(bucket, "hour"):
        return date_format(bucket, "M j")
    return date_format(bucket, "M j H:00")


def bar_chart(rows: list[dict], *, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> dict:
    """Stacked bars (completed / failed / cancelled) as SVG rectangles."""
    count = max(1, len(rows))
    slot = width / count
    gap = min(2.0, slot * 0.2)
    peak = max([sum(r[key] for key, _cls in SERIES) for r in rows] or [0]) or 1
    bars = []
    for i, row in enumerate(rows):
        y = float(height)
        segments = []
        for key, cls in SERIES:
            h = row[key] / peak * height
            if h:
                y -= h
                segments.append({"y": round(y, 2), "h": round(h, 2), "cls": cls})
        total = sum(row[key] for key, _cls in SERIES)
        title = f"{_label(row['bucket'])}: " + ", ".join(f"{_(key)} {row[key]}" for key, _cls in SERIES)
        bars.append({"x": round(i * slot + gap / 2, 2), "w": round(max(slot - gap, 0.5), 2), "segments": segments,
                     "title": title, "total": total})
    return {"width": width, "height": height, "bars": bars, "peak": peak if rows else 0,
            "ticks": _ticks(rows, width=width, slot=slot)}


# Axis labels are 10 px text (dashboard.css): about this wide per character.
LABEL_CHAR_WIDTH = 6.0


def _ticks(rows: list[dict], *, width: int, slot: float) -> list[dict]:
    """A handful of axis labels, evenly spread, always with the first and the last bucket.

    The first starts at the left edge and the last ends at the right edge, so neither
    is cut off by the chart's box; a regular label too close to the last one is left
    out rather than drawn over it.
    """
    count = len(rows)
    if not count:
        return []
    texts = [_label(row["bucket"]) for row in rows]
    label_width = max(len(t) for t in texts) * LABEL_CHAR_WIDTH
    indices = list(range(0, count, max(1, count // 6)))
    last = count - 1
    if indices[-1] != last:
        # The latest bucket is the one people look for.
        while len(indices) > 1 and indices[-1] * slot + slot / 2 + label_width / 2 > width - label_width - 4:
            indices.pop()
        indices.append(last)
    ticks = []
    for i in indices:
        if i == 0:
            x, anchor = 0.0, "start"
        elif i == last:
            x, anchor = float(width), "end"
        else:
            x, anchor = i * slot + slot / 2, "middle"
        ticks.append({"x": round(x, 2), "anchor": anchor, "text": texts[i]})
    return ticks


def _csv(numbers: dict, checks) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="easel-stats-{numbers["period"].days}d.csv"'
    writer = csv.writer(response)
    writer.writerow(["section", "key", "metric", "value"])
    period = numbers["period"]
    writer.writerow(["period", "", "start", period.start.isoformat()])
    writer.writerow(["period", "", "end", period.end.isoformat()])
    for section in ("per_day", "per_hour"):
        for row in numbers[section]:
            for key, _cls in SERIES:
                writer.writerow([section, row["bucket"].isoformat(), key, row[key]])
    for key, value in numbers["totals"].items():
        writer.writerow(["totals", "", key, "" if value is None else value])
    d = numbers["durations"]
    writer.writerow(["durations", "all", "sampled", d["sampled"]])
    for metric in ("p50", "p95"):
        writer.writerow(["durations", "all", metric, "" if d[metric] is None else round(d[metric], 3)])
    for group in ("by_model", "by_backend"):
        for row in d[group]:
            for metric in ("count", "p50", "p95"):
                value = row[metric]
                writer.writerow([f"durations_{group}", row["name"], metric,
                                 round(value, 3) if isinstance(value, float) else value])
    for key, value in numbers["queue"].items():
        writer.writerow(["queue", "", key, value.isoformat() if hasattr(value, "isoformat") else
                         ("" if value is None else value)])
    for key, value in numbers["images"].items():
        writer.writerow(["images", "", key, value])
    for row in numbers["top_users"]:
        for metric in ("tasks", "images", "failed"):
            writer.writerow(["top_users", row["username"], metric, row[metric]])
    for row in numbers["top_models"]:
        for metric in ("tasks", "completed", "failed"):
            writer.writerow(["top_models", row["model_name"], metric, row[metric]])
    for row in numbers["backends"]:
        writer.writerow(["backends", row["name"], "busy_seconds", round(row["busy_seconds"], 3)])
        writer.writerow(["backends", row["name"], "utilisation", round(row["utilisation"], 4)])
    w = numbers["workers"]
    writer.writerow(["workers", "", "alive", int(w["alive"])])
    writer.writerow(["workers", "", "clusters", len(w["clusters"])])
    writer.writerow(["workers", "", "queued", w["queued"]])
    for check in checks:
        writer.writerow(["doctor", check.name, check.level, check.message])
    return response


def _cluster_status(status) -> str:
    """A cluster's state in the reader's language. django-q2 names its states with its
    own message ids ("Idle", "Working"…, django_q.conf.Conf); a heartbeat may carry one
    as the worker's plain English text, which its catalogue translates here."""
    return _(str(status)) if status else ""


def dashboard_view(request):
    days = _days(request)
    numbers = stats.dashboard_numbers(days=days)
    # No network from a page view: backends are read as the last health check left them.
    checks = run_checks(probe=False)
    if request.GET.get("format") == "csv":
        return _csv(numbers, checks)
    totals = numbers["totals"]
    # Heartbeats carry their start as ISO text (UTC): a datetime again, so the page
    # shows it in the studio's time zone like every other date.
    clusters = [
        {**c, "started_at": parse_datetime(c["started_at"]) if c.get("started_at") else None,
         "status_label": _cluster_status(c.get("status"))}
        for c in numbers["workers"]["clusters"]
    ]
    pumps = list(pumps_alive().order_by("queued_at", "id"))
    held = backends_held()
    for pump in pumps:
        pump.backends_held = held.get(pump.pk, [])
    context = {
        **admin.site.each_context(request),
        "title": _("Studio dashboard"),
        "days": days,
        "periods": PERIODS,
        "n": numbers,
        "clusters": clusters,
        "pumps": pumps,
        "per_day_chart": bar_chart(numbers["per_day"]),
        "per_hour_chart": bar_chart(numbers["per_hour"]),
        "success_percent": None if totals["success_rate"] is None else round(totals["success_rate"] * 100, 1),
        "checks": checks,
        "now": timezone.now(),
        "q_links": [
            (_("Queued jobs"), reverse("admin:django_q_ormq_changelist")),
            (_("Successful jobs"), reverse("admin:django_q_success_changelist")),
            (_("Failed jobs"), reverse("admin:django_q_failure_changelist")),
            (_("Scheduled jobs"), reverse("admin:django_q_schedule_changelist")),
        ],
        "csv_url": f"{request.path}?days={days}&format=csv",
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


# Staff only (the admin's own check: active staff; others go to the admin login page).
dashboard = admin.site.admin_view(dashboard_view)
