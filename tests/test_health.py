"""Liveness and readiness, as a load balancer and a container runtime read them."""
from __future__ import annotations

import pytest

from tests.conftest import wait_for


@pytest.fixture
def no_heartbeats(settings):
    """An empty heartbeat cache: what readiness sees once every cluster's beat has expired.

    (The session's qcluster may be running for other tests; its beats go to the
    database cache this replaces.)
    """
    settings.CACHES = {
        **settings.CACHES,
        "qcluster": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "no-heartbeats"},
    }


def test_liveness_is_200_without_touching_the_database(client):
    # No `db` fixture: pytest-django refuses any database access, so this also proves
    # liveness needs no database.
    response = client.get("/api/v1/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_liveness_is_not_throttled_nor_authenticated(client, settings):
    for _ in range(5):
        assert client.get("/api/v1/health/live", HTTP_AUTHORIZATION="Bearer nonsense").status_code == 200


@pytest.mark.django_db
def test_health_fails_without_a_worker_heartbeat(engine_catalog, no_heartbeats, client):
    from models_catalog.services import backend_check

    assert backend_check(backend=engine_catalog["backend"])  # a backend is online: only the worker is missing
    response = client.get("/api/v1/health")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["worker"] == {"ok": False, "clusters": []}
    assert body["checks"]["backends"]["ok"] is True


@pytest.mark.django_db
def test_health_fails_when_no_enabled_backend_is_online(engine_catalog, qcluster, client):
    from models_catalog.models import ComfyBackend

    backend = engine_catalog["backend"]
    # Online but disabled by staff: not usable, so not ready.
    ComfyBackend.objects.filter(pk=backend.pk).update(is_online=True, enabled=False)
    ComfyBackend.objects.create(name="gpu-down", base_url="http://127.0.0.1:9", is_online=False)
    # A cluster's heartbeat lives 3 s in the cache and is written each second: on a
    # loaded machine one can lapse for a moment, so the answer is read until it has it.
    response = wait_for(lambda: (r := client.get("/api/v1/health")).json()["checks"]["worker"]["ok"] and r,
                        timeout=20, message="the cluster's heartbeat")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert body["checks"]["worker"]["ok"] is True
    assert body["checks"]["backends"] == {
        "ok": False,
        "items": [{"name": "gpu-down", "online": False, "demo": False, "last_seen_at": None}],
    }


@pytest.mark.django_db
def test_health_ok_with_a_running_cluster_and_an_online_backend(engine_catalog, qcluster, client):
    from models_catalog.services import backend_check

    assert backend_check(backend=engine_catalog["backend"])
    response = wait_for(
        lambda: (r := client.get("/api/v1/health")).status_code == 200 and r, timeout=20, message="healthy"
    )
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "worker", "backends", "pumps"}
    assert body["checks"]["worker"]["ok"] is True and body["checks"]["worker"]["clusters"]
    assert [item["name"] for item in body["checks"]["backends"]["items"]] == ["demo"]
    # The cluster starts a pump as its workers spawn (or right after a flush took its row).
    # It holds the backend within a beat of starting.
    pumps = wait_for(lambda: (p := client.get("/api/v1/health").json()["checks"]["pumps"])["ok"]
                     and any(item["backends"] for item in p["items"]) and p,
                     timeout=30, message="a pump holding the backend in the health answer")
    pump = next(item for item in pumps["items"] if item["started_at"])
    assert pump["host"] and pump["pid"] and pump["heartbeat_at"] and pump["prompts"] == 0
    assert pump["backends"] == ["demo"] and pumps["unfollowed"] == 0  # nothing to follow yet


@pytest.mark.django_db
def test_readiness_stays_ok_while_every_gpu_and_worker_is_down(no_heartbeats, client):
    """The web tier keeps serving history, downloads and the admin: a load balancer must keep it."""
    from models_catalog.models import ComfyBackend

    ComfyBackend.objects.create(name="gpu-down", base_url="http://127.0.0.1:9", is_online=False)
    assert client.get("/api/v1/health").status_code == 503
    response = client.get("/api/v1/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": {"ok": True}, "cache": {"ok": True}}}


@pytest.mark.django_db
def test_readiness_is_unavailable_when_the_cache_fails(client, settings):
    # A cache that cannot store anything (a folder nobody may create).
    settings.CACHES = {**settings.CACHES, "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": "/proc/easel-no-cache"}}
    response = client.get("/api/v1/health/ready")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": True} and body["checks"]["cache"]["ok"] is False


@pytest.mark.django_db
def test_readiness_is_unavailable_when_the_database_fails(client, monkeypatch):
    from django.db import connection

    def broken_cursor(*args, **kwargs):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = client.get("/api/v1/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": False, "error": "connection refused"}
    assert client.get("/api/v1/health").json() == {
        "status": "unavailable", "checks": {"database": {"ok": False, "error": "connection refused"}}
    }
