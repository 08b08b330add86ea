"""The served OpenAPI schema is the contract: every operation answers as it says.

Schemathesis loads `/api/v1/schema/` from the WSGI application and sends generated
requests to every operation with a real token: valid ones and invalid ones, its
coverage phase adding each parameter's edges (just under the minimum, just over the
maximum, empty, another type) to random ones. No answer may be a 5xx; every status code,
content type, body and documented header must be as the schema says; and a request the
schema calls invalid must be refused (`negative_data_rejection`), so the schema states
what the server enforces.
"""
from __future__ import annotations

import io
import re

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings as hypothesis_settings
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.bounds import ID_MIN, INT64_MAX
from generation.models import GeneratedImage, GenerationTask, TaskPreview, TaskStatus


def _load_schema():
    # Loaded when the module is collected (schemathesis' lazy `from_fixture` does not work
    # with pytest 9). Serving the schema touches no database.
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


schema = _load_schema()
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


@pytest.fixture
def wsgi_app():
    """The real WSGI application, inside the test's transaction.

    Django closes "old" connections around each request; the test client switches that
    off for its calls and so must we, or the first request would end the test's transaction.
    """
    from config.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def no_dns(monkeypatch):
    """Generated callback URLs name random hosts: answer "unknown host" at once, offline."""
    import socket

    def refuse(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no DNS in the contract test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def world(db, settings, catalog, make_user, no_dns):
    """A user with a token and a few objects, so that path ids can point at real ones."""
    from accounts.services import token_create

    cache.clear()
    settings.DEBUG = False
    settings.EASEL_CREATE_WAIT_SECONDS = 0  # `create` answers 202 at once: no worker here
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {scope: "100000/min" for scope in rest["DEFAULT_THROTTLE_RATES"]}
    settings.REST_FRAMEWORK = rest
    user = make_user("contract", daily_image_quota=100000, max_concurrent_tasks=100000)
    _, token = token_create(user=user, name="contract")

    def task(**fields):
        values = dict(user=user, prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
                      width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1)
        values.update(fields)
        return GenerationTask.objects.create(**values)

    done = task(status=TaskStatus.COMPLETED)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "PNG")
    image = GeneratedImage(task=done, index=0, width=8, height=8, seed=1, size_bytes=len(buffer.getvalue()))
    image.file.save("c.png", ContentFile(buffer.getvalue()), save=False)
    image.thumbnail.save("c.webp", ContentFile(b"RIFF"), save=False)
    image.save()
    running = task(status=TaskStatus.PROCESSING)
    TaskPreview.objects.create(task=running, image=b"\xff\xd8\xff")
    failed = task(status=TaskStatus.FAILED, error_message="boom")
    pending = task()
    yield {
        "token": token,
        "ids": {
            "task_id": [done.pk, running.pk, failed.pk, pending.pk],
            "image_id": [image.pk],
        },
    }
    cache.clear()


def _point_at_real_objects(case, ids: dict) -> None:
    """Half of the valid generated ids are swapped for real ones, so the 200 answers are
    checked too. An id outside the schema's range stays: it is what an invalid case tests."""
    params = case.path_parameters or {}
    for name, choices in ids.items():
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and ID_MIN <= value <= INT64_MAX and value % 2 == 0:
            params[name] = choices[value // 2 % len(choices)]


@schema.parametrize()
@hypothesis_settings(
    # Random cases per operation, besides the coverage phase's edge cases.
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)
def test_every_operation_keeps_to_the_schema(case, world, wsgi_app):
    _point_at_real_objects(case, world["ids"])
    checks = CHECKS
    if case.operation.path in ("/api/v1/health", "/api/v1/health/ready"):
        # Its documented 503 ("degraded": no worker in this test) is its purpose, not a crash.
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(headers={"Authorization": f"Bearer {world['token']}"}, checks=checks)


def test_schema_lists_every_promised_endpoint_with_stable_operation_ids(client):
    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    promised = {
        ("post", "/api/v1/auth/login"), ("post", "/api/v1/generation/create"),
        ("post", "/api/v1/generation/create-async"), ("get", "/api/v1/generation/status/{task_id}"),
        ("get", "/api/v1/generation/result/{task_id}"), ("get", "/api/v1/generation/history"),
        ("delete", "/api/v1/generation/{task_id}"), ("get", "/api/v1/models"),
        ("post", "/api/v1/generation/{task_id}/cancel"), ("post", "/api/v1/generation/{task_id}/retry"),
        ("get", "/api/v1/generation/images/{image_id}/file"), ("get", "/api/v1/generation/images/{image_id}/thumbnail"),
        ("get", "/api/v1/quota"), ("get", "/api/v1/auth/tokens"), ("post", "/api/v1/auth/tokens"),
        ("delete", "/api/v1/auth/tokens/{token_key}"),
    }
    for method, path in promised:
        assert method in paths.get(path, {}), (method, path)
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values() if "operationId" in op]
    assert len(operation_ids) == len(set(operation_ids))
    assert paths["/api/v1/generation/history"]["get"]["operationId"] == "generation_history"
    # Every operation documents the error body for its failures.
    for path, item in paths.items():
        for method, operation in item.items():
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            if path in ("/api/v1/health", "/api/v1/health/ready"):
                errors.remove("503")  # health's own body says what is degraded
            assert "500" in errors, (method, path)
            for code in errors:
                ref = operation["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (method, path, code)
    assert spec["components"]["securitySchemes"]["knoxApiToken"] == {"type": "http", "scheme": "bearer"}


def test_docs_pages_are_served_without_a_cdn(client):
    for url in ("/api/docs/", "/api/redoc/"):
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
        page = response.content.decode()
        assert "/static/drf_spectacular_sidecar/" in page, url
        assert "cdn.jsdelivr" not in page and "unpkg.com" not in page, url
        # Every asset the page loads is one of our static files.
        assets = re.findall(r'"/static/(drf_spectacular_sidecar/[^"?]+)', page)
        assert assets and all(finders.find(asset) for asset in assets), assets
