"""Health endpoints for load balancers, container runtimes and monitoring.

- `GET /api/v1/health/live`: liveness. 200 whenever the process answers HTTP; touches
  neither the database nor the cache, so a database outage does not get every web
  container restarted (Docker's HEALTHCHECK and Kubernetes' livenessProbe use it).
- `GET /api/v1/health/ready`: readiness. The database answers, a django-q2 cluster's
  heartbeat is fresh (`generation.fleet.workers.worker_status`), and at least one enabled
  backend is online. 200 `{"status": "ok", "checks": {...}}`, else 503 with the same
  shape (`degraded`, or `unavailable` when the database is down). `/api/v1/health`
  answers the same.

Neither needs authentication and neither is throttled (monitoring polls them). Their
URLs are in `generation.api.urls`.
"""
from __future__ import annotations

from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from models_catalog.models import ComfyBackend

from ..fleet.workers import worker_status


class LivenessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])
    checks = serializers.DictField(
        child=serializers.DictField(), help_text="database, worker, backends: each {ok, ...details}"
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


def readiness() -> tuple[dict, int]:
    """The readiness body and its HTTP status."""
    checks: dict = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = {"ok": False, "error": str(exc)}
        return {"status": "unavailable", "checks": checks}, 503
    workers = worker_status()
    checks["worker"] = {"ok": workers["alive"], "clusters": workers["clusters"]}
    backends = list(ComfyBackend.objects.filter(enabled=True).order_by("name"))
    checks["backends"] = {
        "ok": any(b.is_online for b in backends),
        "items": [
            {"name": b.name, "online": b.is_online, "demo": b.is_demo, "last_seen_at": b.last_seen_at}
            for b in backends
        ],
    }
    ok = all(check["ok"] for check in checks.values())
    return {"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503


class ReadinessApi(_Open):
    """Database, worker heartbeat and backends; 503 when generation cannot progress."""

    @extend_schema(
        operation_id="health_ready",
        summary="Readiness: generation can progress",
        description=(
            "Database, worker heartbeat and at least one enabled backend online. "
            "503 with the same body when any check fails."
        ),
        responses={200: ReadinessSerializer, 503: OpenApiResponse(ReadinessSerializer, description="Not ready.")},
        tags=["service"],
    )
    def get(self, request):
        body, status = readiness()
        response = Response(body, status=status)
        response["Cache-Control"] = "no-store"
        return response


class HealthApi(ReadinessApi):
    """`/api/v1/health`: the readiness answer under its historical path and operation id."""

    @extend_schema(
        operation_id="health",
        summary="Service health (same as /api/v1/health/ready)",
        description="Database, worker heartbeat and backends; 503 when generation cannot progress.",
        responses={200: ReadinessSerializer, 503: OpenApiResponse(ReadinessSerializer, description="Degraded.")},
        tags=["service"],
    )
    def get(self, request):
        return super().get(request)
