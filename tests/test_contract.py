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

import jsonschema
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
from generation.demo_engine.options import DEFAULT_LORAS, DEFAULT_UPSCALE_MODELS, DEFAULT_VAES
from generation.models import GeneratedImage, GenerationTask, SourceImage, TaskPreview, TaskStatus
from models_catalog.models import ModelFile, WorkflowTemplate


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
    # The demo engine's files, as its catalog sync makes them (enabled: the catalog's first
    # files), so the templates' pick-lists and the creates below have real choices.
    for kind, names in (("lora", DEFAULT_LORAS), ("upscale_model", DEFAULT_UPSCALE_MODELS), ("vae", DEFAULT_VAES)):
        for name in names:
            ModelFile.objects.create(kind=kind, file_name=name, enabled=True).backends.add(catalog["backend"])
    source = SourceImage(user=user, content_type="image/png", width=8, height=8,
                         size_bytes=len(buffer.getvalue()), sha256="0" * 64)
    source.file.save("s.png", ContentFile(buffer.getvalue()), save=False)
    source.save()
    yield {
        "token": token,
        "source_image": source.pk,
        "ids": {
            "task_id": [done.pk, running.pk, failed.pk, pending.pk],
            "image_id": [image.pk],
            "slug": list(WorkflowTemplate.objects.filter(enabled=True).order_by("slug").values_list("slug", flat=True)),
        },
    }
    cache.clear()


_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")


def _point_at_real_objects(case, ids: dict) -> None:
    """Half of the valid generated ids (and slugs) are swapped for real ones, so the 200
    answers are checked too. A value outside the schema's range or pattern stays: it is
    what an invalid case tests."""
    params = case.path_parameters or {}
    for name, choices in ids.items():
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and ID_MIN <= value <= INT64_MAX and value % 2 == 0:
            params[name] = choices[value // 2 % len(choices)]
        elif isinstance(value, str) and _SLUG.fullmatch(value) and len(value) % 2 == 0:
            params[name] = choices[len(value) // 2 % len(choices)]


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


def _validated_call(world, operation: str, *, body=None, path_parameters=None):
    """One request built by hand, sent and checked like the generated ones."""
    method, path = operation.split(" ", 1)
    case = schema[path][method].Case(
        body=body, media_type="application/json", path_parameters=path_parameters,
    ) if body is not None else schema[path][method].Case(path_parameters=path_parameters)
    return case.call_and_validate(headers={"Authorization": f"Bearer {world['token']}"}, checks=CHECKS)


def test_templates_are_listed_and_described_as_the_schema_says(world, wsgi_app):
    listed = _validated_call(world, "GET /api/v1/templates").json()["results"]
    slugs = [t["slug"] for t in listed]
    assert {"txt2img-basic", "txt2img-loras", "upscale", "inpaint"} <= set(slugs)
    for slug in slugs:
        detail = _validated_call(world, "GET /api/v1/templates/{slug}", path_parameters={"slug": slug}).json()
        assert detail == next(t for t in listed if t["slug"] == slug)
    loras = next(t for t in listed if t["slug"] == "txt2img-loras")["schema"]["properties"]["inputs"]["properties"]
    assert loras["lora_1"]["enum"] == [*sorted(DEFAULT_LORAS), None]
    assert _validated_call(world, "GET /api/v1/templates/{slug}", path_parameters={"slug": "nope"}).status_code == 404


def test_creating_with_a_templates_own_inputs_keeps_to_the_schema(world, wsgi_app):
    lora = _validated_call(world, "POST /api/v1/generation/create-async", body={
        "template": "txt2img-loras", "prompt": "a lighthouse", "model_name": "demo-sd15",
        "inputs": {"lora_1": DEFAULT_LORAS[0], "lora_1_strength": 0.5, "lora_2": None},
    })
    assert lora.status_code == 202, lora.text
    task = lora.json()
    assert task["template"] == "txt2img-loras" and task["prompt"] == "a lighthouse"
    assert task["inputs"]["lora_1"] == DEFAULT_LORAS[0] and task["inputs"]["lora_1_strength"] == 0.5
    assert task["inputs"]["lora_2"] is None and task["inputs"]["lora_2_strength"] == 1.0
    # An upscale takes a picture and no prompt, no model.
    upscale = _validated_call(world, "POST /api/v1/generation/create-async", body={
        "template": "upscale", "source_image": world["source_image"], "inputs": {"scale_by": 2},
    })
    assert upscale.status_code == 202, upscale.text
    task = upscale.json()
    assert task["prompt"] == "" and task["source_image"] == world["source_image"]
    assert task["inputs"] == {"upscale_model": DEFAULT_UPSCALE_MODELS[0], "scale_by": 2.0}
    status = _validated_call(world, "GET /api/v1/generation/status/{task_id}", path_parameters={"task_id": task["id"]})
    assert status.json()["inputs"] == task["inputs"]
    # Refusals name the input, in the documented error body.
    refused = _validated_call(world, "POST /api/v1/generation/create-async", body={
        "template": "upscale", "source_image": world["source_image"], "inputs": {"colour": "red", "scale_by": 9},
    })
    assert refused.status_code == 400 and set(refused.json()["error"]["fields"]) == {"inputs", "scale_by"}


# --- a template's `schema` is a JSON Schema of the create request ----------------------------------


def _body_from(template_schema: dict) -> dict:
    """A create body as a client builds it from a template's schema: every default, the
    template's slug, and the first choice of each required pick-list."""
    body = {}
    for name, prop in template_schema["properties"].items():
        if "const" in prop:
            body[name] = prop["const"]
        elif name == "inputs":
            body["inputs"] = {key: value["default"] for key, value in prop["properties"].items() if "default" in value}
        elif "default" in prop:
            body[name] = prop["default"]
    return body


def test_every_templates_schema_is_a_valid_json_schema(world, client):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {world['token']}"
    listed = client.get("/api/v1/templates").json()["results"]
    assert listed
    for template in listed:
        template_schema = template["schema"]
        assert template_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(template_schema)  # raises SchemaError
        # Its own defaults are values it accepts.
        defaults = _body_from(template_schema)
        for name, value in defaults.get("inputs", {}).items():
            sub = template_schema["properties"]["inputs"]["properties"][name]
            assert jsonschema.Draft202012Validator(sub).is_valid(value), (template["slug"], name, value)


def test_a_body_built_from_the_schema_is_accepted_by_schema_and_api_alike(world, client):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {world['token']}"
    template_schema = client.get("/api/v1/templates/txt2img-loras").json()["schema"]
    validator = jsonschema.Draft202012Validator(template_schema, format_checker=jsonschema.FormatChecker())
    body = _body_from(template_schema)
    assert "prompt" not in body and not validator.is_valid(body)  # the prompt is required, by both
    assert client.post("/api/v1/generation/create-async", body, content_type="application/json").status_code == 400
    body["prompt"] = "a lighthouse"
    lora = template_schema["properties"]["inputs"]["properties"]["lora_1"]
    body["inputs"]["lora_1"] = next(name for name in lora["enum"] if name is not None)
    validator.validate(body)
    accepted = client.post("/api/v1/generation/create-async", body, content_type="application/json")
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["inputs"]["lora_1"] == body["inputs"]["lora_1"]

    def refused_by_both(change, field: str) -> None:
        wrong = {**body, "inputs": dict(body["inputs"])}
        change(wrong)
        assert not validator.is_valid(wrong), wrong
        response = client.post("/api/v1/generation/create-async", wrong, content_type="application/json")
        assert response.status_code == 400, response.content
        assert field in response.json()["error"]["fields"], response.json()

    # Type errors: a number sent as text, a file name as a number, a wrong top-level type.
    refused_by_both(lambda b: b["inputs"].update(lora_1_strength="1"), "lora_1_strength")
    refused_by_both(lambda b: b["inputs"].update(lora_2=7), "lora_2")
    refused_by_both(lambda b: b.update(steps="20"), "steps")
    refused_by_both(lambda b: b.update(prompt=5), "prompt")
    # Values out of its lists and bounds, and an input the template does not have.
    refused_by_both(lambda b: b["inputs"].update(lora_1="nope.safetensors"), "lora_1")
    refused_by_both(lambda b: b["inputs"].update(lora_1_strength=9), "lora_1_strength")
    refused_by_both(lambda b: b["inputs"].update(colour="red"), "inputs")
    refused_by_both(lambda b: b.update(sampler="nope"), "sampler")


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
        ("delete", "/api/v1/auth/tokens/{token_key}"), ("get", "/api/v1/templates"),
        ("get", "/api/v1/templates/{slug}"),
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


def test_the_schema_documents_templates_and_a_tasks_inputs(client):
    spec = client.get("/api/v1/schema/?format=json").json()
    paths, components = spec["paths"], spec["components"]["schemas"]
    detail = paths["/api/v1/templates/{slug}"]["get"]
    assert detail["operationId"] == "templates_retrieve" and detail["description"]
    (slug,) = detail["parameters"]
    assert slug["in"] == "path" and slug["schema"]["pattern"] == "^[-a-zA-Z0-9_]+$" and slug["description"]
    assert set(detail["responses"]) >= {"200", "404"}
    assert detail["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Template"}
    template = components["Template"]
    assert set(template["required"]) >= {"slug", "name", "kind", "description", "is_default", "parameters", "schema"}
    for name, prop in template["properties"].items():
        assert prop.get("description"), name
    documented = template["properties"]["schema"]
    assert documented["type"] == "object" and "2020-12" in documented["description"]
    assert set(documented["required"]) == {"$schema", "type", "properties", "required"}
    one_input = documented["properties"]["properties"]["additionalProperties"]["properties"]
    assert {"title", "type", "enum", "default", "minimum", "maximum", "x-easel-kind", "x-easel-group"} <= set(one_input)
    assert all(prop.get("description") or prop.get("enum") or prop.get("type") for prop in one_input.values())
    create = components["TaskCreateInputRequest"]["properties"]["inputs"]
    assert create["type"] == "object" and create["nullable"] and "schema" in create["description"]
    task = components["Task"]["properties"]["inputs"]
    assert task["type"] == "object" and task["readOnly"] and task["description"]


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
