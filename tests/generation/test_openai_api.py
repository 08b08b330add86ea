"""The OpenAI-compatible Images API, driven by the official `openai` package against a
real gunicorn serving Easel, a real qcluster and the demo engine on a real port.

Every create is an ordinary Easel task: it shows in the user's history, spends the
user's quota, and its failures come back in OpenAI's error shape as the exceptions the
SDK raises for OpenAI's own status codes.
"""
from __future__ import annotations

import base64
import io
import json
import time
from unittest import mock

import openai
import pytest
import requests
from PIL import Image, ImageDraw
from rest_framework.test import APIClient

from generation.models import GenerationTask, SourceImage
from tests.conftest import Web

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

WAIT = 25  # EASEL_CREATE_WAIT_SECONDS of the server: the longest a create waits for its images
URL_MAX_AGE = 600


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker):
    """gunicorn as deployed (deploy/gunicorn.conf.py) on the test database, for the module."""
    with django_db_blocker.unblock():
        server = Web(GUNICORN_THREADS="4", EASEL_CREATE_WAIT_SECONDS=str(WAIT), EASEL_CREATE_WAIT_PER_USER="2",
                     EASEL_CREATE_WAIT_SLOTS="2", EASEL_CATALOG_CACHE_SECONDS="0",
                     EASEL_OPENAI_URL_MAX_AGE=str(URL_MAX_AGE)).start()
    yield server.url
    server.stop()


@pytest.fixture
def studio(web, engine_catalog, qcluster):
    return web


@pytest.fixture
def make_client(studio, make_user):
    """(an `openai.OpenAI` pointed at Easel with a user's token, that user, the token)."""
    from accounts.services import token_create

    def make(**user_fields):
        user = make_user(**user_fields)
        _token, clear = token_create(user=user)
        # No retries by the SDK: each call here is one request, as the test reads it.
        client = openai.OpenAI(base_url=f"{studio}/openai/v1", api_key=clear, max_retries=0, timeout=WAIT + 60)
        return client, user, clear

    return make


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_generate_answers_base64_pngs_and_the_task_is_in_the_history(make_client, studio):
    client, user, token = make_client()
    answer = client.images.generate(
        model="demo-sd15", prompt="a lighthouse at dusk", n=2, size="64x64", response_format="b64_json",
        # Accepted and ignored, as documented: the studio has no such settings.
        quality="high", style="vivid", user="end-user-7",
    )
    assert answer.created > 0 and len(answer.data) == 2
    for item in answer.data:
        image = picture(base64.b64decode(item.b64_json))
        assert image.format == "PNG" and image.size == (64, 64)
    task = GenerationTask.objects.get(user=user)
    assert (task.prompt, task.model_name, task.batch_size, task.status) == (
        "a lighthouse at dusk", "demo-sd15", 2, "completed")
    history = requests.get(f"{studio}/api/v1/generation/history", headers={"Authorization": f"Bearer {token}"},
                           timeout=10).json()
    assert [t["id"] for t in history["results"]] == [task.pk]


def test_generate_answers_signed_links_that_work_without_a_token(make_client, studio):
    client, user, token = make_client()
    # OpenAI's own model name: the studio's default model, its default size (64 × 64 here).
    answer = client.images.generate(model="dall-e-3", prompt="a red bicycle")
    assert len(answer.data) == 1 and answer.data[0].b64_json is None
    link = answer.data[0].url
    assert link.startswith(f"{studio}/openai/v1/files/images/")
    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"
    assert picture(fetched.content).size == (64, 64)
    assert GenerationTask.objects.get(user=user).model_name == "demo-sd15"

    tampered = link[:-1] + ("A" if link[-1] != "A" else "B")
    refused = requests.get(tampered, timeout=10)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "invalid_link"

    # The same image's link, signed (with the server's key) longer ago than the links last.
    from django.core import signing

    image_id = GenerationTask.objects.get(user=user).images.get().pk
    with mock.patch("django.core.signing.time.time", return_value=time.time() - URL_MAX_AGE - 60):
        old = signing.TimestampSigner(salt="easel.openai.image-link").sign(str(image_id))
    expired = requests.get(f"{studio}/openai/v1/files/images/{old}", timeout=10)
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "link_expired"

    # Deleting the task takes its pictures, whatever links are out.
    task = GenerationTask.objects.get(user=user)
    assert requests.delete(f"{studio}/api/v1/generation/{task.pk}", headers={"Authorization": f"Bearer {token}"},
                           timeout=10).status_code == 204
    gone = requests.get(link, timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def source_png(size=(64, 64), color=(30, 140, 220)) -> bytes:
    return png_bytes(Image.new("RGB", size, color))


def openai_mask(size=(64, 64), box=(16, 16, 47, 47)) -> bytes:
    """OpenAI's kind of mask: opaque where the picture is kept, fully transparent where it is edited."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle(box, fill=(0, 0, 0, 0))
    return png_bytes(mask)


def test_edit_with_a_mask_inpaints_only_the_transparent_area(make_client):
    client, user, _token = make_client()
    answer = client.images.edit(
        model="demo-sd15", image=("door.png", source_png(), "image/png"), mask=("mask.png", openai_mask(), "image/png"),
        prompt="a red door", response_format="b64_json",
    )
    result = picture(base64.b64decode(answer.data[0].b64_json)).convert("RGB")
    assert result.size == (64, 64)
    assert result.getpixel((2, 2)) == (30, 140, 220)  # outside the mask: kept
    inside = [result.getpixel((x, y)) for x in range(20, 44, 4) for y in range(20, 44, 4)]
    assert any(pixel != (30, 140, 220) for pixel in inside)
    task = GenerationTask.objects.get(user=user)
    assert task.template.slug == "inpaint" and task.source_image is not None
    # Easel's mask, made from OpenAI's: white (redraw) exactly where OpenAI's was transparent.
    mask = SourceImage.objects.get(user=user, pk=task.inputs["mask"])
    with mask.file.open("rb") as handle:
        easel_mask = picture(handle.read()).convert("RGB")
    assert easel_mask.getpixel((20, 20)) == (255, 255, 255) and easel_mask.getpixel((2, 2)) == (0, 0, 0)


def test_edit_without_a_mask_is_image_to_image_at_the_size_asked(make_client):
    client, user, _token = make_client()
    answer = client.images.edit(model="demo-sd15", image=("photo.png", source_png(size=(96, 64)), "image/png"),
                                prompt="in winter", size="64x64", response_format="b64_json")
    assert picture(base64.b64decode(answer.data[0].b64_json)).size == (64, 64)
    task = GenerationTask.objects.get(user=user)
    assert task.template.kind == "img2img" and task.template.slug != "inpaint"
    assert (task.source_image.width, task.source_image.height) == (64, 64)


def test_a_retry_with_the_same_idempotency_key_gets_the_first_images(make_client):
    """Issue 15: "create, create-async and the OpenAI endpoints honour an Idempotency-Key"."""
    client, user, _token = make_client()
    key = {"Idempotency-Key": "retry-7f3c"}
    first = client.images.with_raw_response.generate(model="demo-sd15", prompt="a quiet pier", size="64x64",
                                                     response_format="b64_json", extra_headers=key)
    again = client.images.with_raw_response.generate(model="demo-sd15", prompt="a quiet pier", size="64x64",
                                                     response_format="b64_json", extra_headers=key)
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert first.parse().data[0].b64_json == again.parse().data[0].b64_json
    assert GenerationTask.objects.filter(user=user).count() == 1
    # The same key for another request: refused in OpenAI's shape, nothing created.
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.images.generate(model="demo-sd15", prompt="a loud pier", size="64x64", extra_headers=key)
    assert refused.value.body["code"] == "idempotency_key_reused"
    # An edit's pictures are part of the request: another image under the key is another request.
    edit_key = {"Idempotency-Key": "edit-1"}
    client.images.edit(model="demo-sd15", image=("a.png", source_png(size=(64, 64)), "image/png"), prompt="snow",
                       size="64x64", response_format="b64_json", extra_headers=edit_key)
    other = Image.new("RGB", (64, 64), "navy")
    with pytest.raises(openai.UnprocessableEntityError):
        client.images.edit(model="demo-sd15", image=("a.png", png_bytes(other), "image/png"), prompt="snow",
                           size="64x64", response_format="b64_json", extra_headers=edit_key)
    assert GenerationTask.objects.filter(user=user).count() == 2


def test_bad_uploads_are_refused_in_openais_shape(make_client, settings):
    client, user, _token = make_client()
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(image=("x.png", b"not a picture", "image/png"), prompt="x")
    assert refused.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(image=("a.png", source_png(), "image/png"),
                           mask=("m.png", openai_mask(size=(32, 32)), "image/png"), prompt="x")
    assert refused.value.body["param"] == "mask" and "same size" in refused.value.message
    assert not GenerationTask.objects.filter(user=user).exists()


def test_a_wrong_key_is_an_authentication_error(studio):
    client = openai.OpenAI(base_url=f"{studio}/openai/v1", api_key="not-an-easel-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.images.generate(prompt="x")
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_over_quota_is_a_rate_limit_error_and_creates_nothing(make_client):
    client, user, _token = make_client(daily_image_quota=1)
    with pytest.raises(openai.RateLimitError) as refused:
        client.images.generate(prompt="two please", n=2)
    assert refused.value.status_code == 429 and refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert not GenerationTask.objects.filter(user=user).exists()


def test_unknown_model_bad_size_and_bad_n_are_refused(make_client):
    client, user, _token = make_client()
    with pytest.raises(openai.NotFoundError) as refused:
        client.images.generate(model="no-such-model", prompt="x")
    assert refused.value.code == "model_not_found" and refused.value.body["param"] == "model"
    for size in ("huge", "100x33", "8192x8192"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.images.generate(prompt="x", size=size)
        assert refused.value.body["param"] == "size", size
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="x", n=50)
    assert refused.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="", model="demo-sd15")
    assert refused.value.body["param"] == "prompt"
    assert not GenerationTask.objects.filter(user=user).exists()


def test_models_lists_checkpoints_and_templates(make_client, studio):
    client, _user, _token = make_client()
    ids = [model.id for model in client.models.list()]
    assert "demo-sd15" in ids and "inpaint" in ids and "txt2img-basic" in ids
    assert client.models.retrieve("demo-sd15").owned_by == "easel"
    assert client.models.retrieve("gpt-image-1").id == "gpt-image-1"
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("no-such-model")
    assert refused.value.code == "model_not_found"
    # An unknown path under /openai/ answers OpenAI's error shape too, never a page.
    lost = requests.post(f"{studio}/openai/v1/chat/completions", json={}, timeout=10)
    assert lost.status_code == 404 and set(lost.json()["error"]) == {"message", "type", "param", "code"}


def test_a_failed_task_is_an_error_naming_it_and_is_not_retried(make_client, engine_catalog):
    engine_catalog["engine"].faults(fail_at_step=2)
    client, user, _token = make_client()
    # The SDK's own retries on: the answer's x-should-retry keeps it from a second task.
    client = client.with_options(max_retries=2)
    with pytest.raises(openai.InternalServerError) as refused:
        client.images.generate(prompt="doomed")
    task = GenerationTask.objects.get(user=user)  # one task: no retry
    assert task.status == "failed"
    assert refused.value.code == "generation_failed" and refused.value.body["task_id"] == task.pk
    assert f"#{task.pk}" in refused.value.message


def test_a_create_that_outlasts_the_wait_names_its_task(make_client, engine_catalog):
    engine_catalog["engine"].faults(step_delay=WAIT / 3)
    client, user, _token = make_client()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        client.images.generate(prompt="slow")
    assert WAIT - 1 <= time.monotonic() - started < WAIT + 20
    task = GenerationTask.objects.get(user=user)
    assert refused.value.status_code == 504 and refused.value.code == "timeout"
    assert refused.value.body["task_id"] == task.pk and f"/api/v1/generation/status/{task.pk}" in refused.value.message
    assert task.status in ("pending", "processing")


# --- bad input, without the live studio: always OpenAI's error shape, never a 500 ------------


@pytest.mark.parametrize("body, param", [
    ([1, 2], None),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "n": 1.5}, "n"),
    ({"prompt": "x", "n": True}, "n"),
    ({"prompt": "x", "size": 512}, "size"),
    ({"prompt": "x", "response_format": "jpeg"}, "response_format"),
    ({"prompt": "x", "stream": True}, "stream"),
    ({"prompt": "x", "model": "txt2img-basic", "n": 0}, "n"),
    ({"prompt": "x", "model": "img2img-basic"}, "model"),
    ({"prompt": "x" * 100_000}, "prompt"),
])
def test_bad_generation_bodies_are_400_naming_the_parameter(body, param, catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    response = client.post("/openai/v1/images/generations", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert not GenerationTask.objects.exists()


def test_malformed_requests_keep_openais_shape(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    broken = client.post("/openai/v1/images/generations", "{nope", content_type="application/json")
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/openai/v1/images/generations").status_code == 405
    no_image = client.post("/openai/v1/images/edits", {"prompt": "x"}, format="multipart")
    assert no_image.status_code == 400 and no_image.json()["error"]["param"] == "image"
    as_json = client.post("/openai/v1/images/edits", {"prompt": "x"}, format="json")
    assert as_json.status_code == 400 and set(as_json.json()["error"]) == {"message", "type", "param", "code"}
    for path in ("/openai/", "/openai/v2/images", "/openai/v1/models/a/b"):
        lost = client.get(path)
        assert lost.status_code == 404 and "error" in lost.json(), path
    # A session (a signed-in browser) is not an API key.
    session = APIClient()
    session.force_login(make_user())
    refused = session.post("/openai/v1/images/generations", {"prompt": "x"}, format="json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_what_the_middleware_refuses_is_in_openais_shape_too(catalog, make_user, api_client_for, settings):
    """Refused before any view runs (an address too long, a body declared too large) or a
    crash outside a view: OpenAI's error shape under /openai/, never a page."""
    client = api_client_for(make_user())
    long = client.get("/openai/v1/models/" + "m" * (settings.EASEL_MAX_URI_LENGTH + 10))
    assert long.status_code == 414 and long.json()["error"]["code"] == "uri_too_long"
    assert set(long.json()["error"]) == {"message", "type", "param", "code"}
    big = client.post("/openai/v1/images/generations", b"{}", content_type="application/json",
                      CONTENT_LENGTH=str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    from config.views import server_error
    from django.test import RequestFactory

    crashed = server_error(RequestFactory().get("/openai/v1/models"))
    assert crashed.status_code == 500 and json.loads(crashed.content)["error"]["type"] == "server_error"


def test_an_image_over_the_upload_limit_is_413(catalog, make_user, api_client_for, settings):
    settings.EASEL_MAX_UPLOAD_BYTES = 2000
    client = api_client_for(make_user())
    noise = Image.effect_noise((64, 64), 100).convert("RGB")
    upload = io.BytesIO(png_bytes(noise))
    upload.name = "big.png"
    response = client.post("/openai/v1/images/edits", {"prompt": "x", "image": upload}, format="multipart")
    assert response.status_code == 413 and response.json()["error"]["param"] == "image"


def test_an_edit_is_judged_by_its_content_and_an_unfinished_task_is_named(catalog, make_user, api_client_for,
                                                                          settings):
    """A JPEG sent as "image[].png" (clients name uploads loosely) is taken; with no time to
    wait (the catalog's backend is offline) the answer is the 504 naming the task."""
    settings.EASEL_CREATE_WAIT_SECONDS = 0
    user = make_user()
    client = api_client_for(user)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(jpeg, "JPEG")
    jpeg.seek(0)
    jpeg.name = "image.png"
    response = client.post("/openai/v1/images/edits", {"prompt": "x", "image[]": jpeg, "model": "demo-sd15"},
                           format="multipart")
    assert response.status_code == 504, response.content
    assert response["x-should-retry"] == "false"
    task = GenerationTask.objects.get(user=user)
    assert response.json()["error"]["task_id"] == task.pk and task.status == "pending"
    assert task.template.kind == "img2img" and task.source_image.content_type == "image/png"


def test_the_rest_apis_rate_limit_applies(catalog, make_user, api_client_for, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/min"}}
    client = api_client_for(make_user())
    assert [client.get("/openai/v1/models").status_code for _ in range(2)] == [200, 200]
    throttled = client.post("/openai/v1/images/generations", {"prompt": "x"}, format="json")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"
    assert not GenerationTask.objects.exists()
