"""Health endpoints for load balancers, container runtimes and monitoring.

- `GET /api/v1/health/live`: liveness. 200 whenever the process answers HTTP; touches
  neither the database nor the cache, so a database outage does not get every web
  container restarted (Docker's HEALTHCHECK and Kubernetes' livenessProbe use it).
- `GET /api/v1/health/ready`: readiness of this web process, for a load balancer: the
  database and the cache answer. It says nothing about GPUs or workers on purpose: when
  every GPU is down, history, downloads and the admin must stay in the load balancer.
  200 `{"status": "ok", "checks": {...}}`, else 503 `unavailable` with the same shape.
- `GET /api/v1/health`: the studio's health, for monitoring: the database, a django-q2
  cluster's heartbeat (`generation.fleet.workers.worker_status`) and at least one
  enabled backend online. 503 `degraded` (or `unavailable` without a database) when
  generation cannot progress.

Neither needs authentication and neither is throttled (monitoring polls them). Their
URLs are in `generation.api.urls`.
"""
from __future__ import annotations

from django.core.cache import caches
from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from models_catalog.models import ComfyBackend

from ..fleet.holdings import backends_held
from ..fleet.pump import pumps_alive, tasks_unfollowed
from ..fleet.workers import worker_status


class LivenessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])
    checks = serializers.DictField(
        child=serializers.DictField(),
        help_text="Each check as {ok, ...details}: database and cache (ready); database, worker and backends (health).",
    )


class _Open(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []


class LivenessApi(_Open):
    @extend_schema(
        operation_id="health_live",
        summary="Liveness: the web process answers",
        description="Always 200 while the process serves HTTP; checks nothing else.",
        responses={200: LivenessSerializer},
        tags=["service"],
    )
    def get(self, request):
        response = Response({"status": "ok"})
        response["Cache-Control"] = "no-store"
        return response


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "not ready"
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


def _cache() -> dict:
    # The default cache holds the rate limits and sign-in lockouts.
    probe = "easel:health:probe"
    try:
        cache = caches["default"]
        cache.set(probe, 1, 10)
        ok = cache.get(probe) == 1
    except Exception as exc:  # a cache server that is down
        return {"ok": False, "error": str(exc)}
    return {"ok": ok} if ok else {"ok": False, "error": "the cache did not keep a value"}


def web_readiness() -> tuple[dict, int]:
    """Can this web process serve requests? The database and the cache answer."""
    checks = {"database": _database(), "cache": _cache()}
    ok = all(check["ok"] for check in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


def studio_health() -> tuple[dict, int]:
    """Can generation progress? The database, a worker heartbeat and an online backend."""
    checks: dict = {"database": _database()}
    if not checks["database"]["ok"]:
        return {"status": "unavailable", "checks": checks}, 503
    workers = worker_status()
    checks["worker"] = {"ok": workers["alive"], "clusters": workers["clusters"]}
    ok = all(check["ok"] for check in checks.values())
    # The pumps that follow the prompts (shown; the worker check above says whether
    # any can run: a pump starts within seconds of a task being assigned).
    pumps = list(pumps_alive().order_by("queued_at", "id"))
    held = backends_held()
    pump_check = {
        "ok": any(p.started_at for p in pumps),
        "items": [{"id": p.pk, "host": p.host, "pid": p.pid, "started_at": p.started_at,
                   "heartbeat_at": p.heartbeat_at, "prompts": p.running, "backends": held.get(p.pk, [])}
                  for p in pumps],
        # Assigned tasks no pump has followed for a while (a pump died; one takes them
        # once their leases run out).
        "unfollowed": tasks_unfollowed(),
    }
    backends = list(ComfyBackend.objects.filter(enabled=True).order_by("name"))
    checks["backends"] = {
        "ok": any(b.is_online for b in backends),
        "items": [
            {"name": b.name, "online": b.is_online, "demo": b.is_demo, "last_seen_at": b.last_seen_at}
            for b in backends
        ],
    }
    ok = ok and checks["backends"]["ok"]
    checks["pumps"] = pump_check
    return {"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503


def _answer(result: tuple[dict, int]) -> Response:
    body, status = result
    response = Response(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


class ReadinessApi(_Open):
    """This web process can serve: database and cache (for load balancers)."""

    @extend_schema(
        operation_id="health_ready",
        summary="Readiness: this web process can serve requests",
        description=(
            "The database and the cache answer. GPUs and workers are not checked here (see "
            "`/api/v1/health`): pages, history and downloads keep working while they are down. "
            "503 with the same body when a check fails."
        ),
        responses={200: ReadinessSerializer, 503: OpenApiResponse(ReadinessSerializer, description="Not ready.")},
        tags=["service"],
    )
    def get(self, request):
        return _answer(web_readiness())


class HealthApi(_Open):
    """`/api/v1/health`: whether generation can progress (for monitoring and alerts)."""

    @extend_schema(
        operation_id="health",
        summary="Studio health: generation can progress",
        description="Database, worker heartbeat and at least one enabled backend online; 503 when generation "
                    "cannot progress.",
        responses={200: ReadinessSerializer, 503: OpenApiResponse(ReadinessSerializer, description="Degraded.")},
        tags=["service"],
    )
    def get(self, request):
        return _answer(studio_health())
