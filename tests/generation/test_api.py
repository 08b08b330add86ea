"""The promised API surface, owner isolation on every endpoint, and the error body."""
import io
import time
from datetime import datetime, timezone as dt_timezone

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from PIL import Image
from rest_framework.test import APIClient

from generation.models import GeneratedImage, GenerationTask, TaskPreview, TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Rate-limit counters live in the default cache: no test may inherit another's.
    cache.clear()
    yield
    cache.clear()


def _rates(settings, **rates):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], **rates}
    settings.REST_FRAMEWORK = rest


def _task(user, checkpoint=None, **fields) -> GenerationTask:
    values = dict(prompt="a red square", model_name="demo-sd15", checkpoint=checkpoint, width=64, height=64,
                  steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1)
    values.update(fields)
    return GenerationTask.objects.create(user=user, **values)


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "fields"} and error["message"]
    if code:
        assert error["code"] == code, error
    return error


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def finished_task(catalog, make_user):
    """A completed task with one stored image, as the runner leaves it."""
    owner = make_user("owner")
    task = GenerationTask.objects.create(
        user=owner, prompt="a red square", model_name="demo-sd15", checkpoint=catalog["checkpoint"], width=64,
        height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1, status=TaskStatus.COMPLETED,
    )
    image = GeneratedImage(task=task, index=0, width=8, height=8, seed=1, size_bytes=10)
    image.file.save("x.png", ContentFile(_png()), save=False)
    image.thumbnail.save("t.webp", ContentFile(b"RIFF"), save=False)
    image.save()
    return task


def test_create_async_answers_202_with_the_promised_fields(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    response = client.post("/api/v1/generation/create-async", {"prompt": "a beautiful landscape",
                                                                 "model_name": "demo-sd15"}, format="json")
    assert response.status_code == 202
    body = response.json()
    for key in ("id", "user_id", "prompt", "model_name", "status", "result_id", "error_message", "created_at",
                "completed_at"):
        assert key in body
    assert body["status"] == "pending" and body["model_name"] == "demo-sd15"
    assert response["Location"].endswith(f"/api/v1/generation/status/{body['id']}")


def test_create_with_bad_input_is_400_naming_fields(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    response = client.post("/api/v1/generation/create-async", {"prompt": "", "width": 99}, format="json")
    assert response.status_code == 400
    assert "prompt" in response.json()["error"]["fields"]
    response = client.post("/api/v1/generation/create-async", {"prompt": "ok", "width": 99, "model_name": "zzz"},
                           format="json")
    fields = response.json()["error"]["fields"]
    assert "width" in fields and "model_name" in fields


def test_models_lists_usable_checkpoints(catalog, make_user, api_client_for):
    body = api_client_for(make_user()).get("/api/v1/models").json()
    assert [m["name"] for m in body["results"]] == ["demo-sd15"]


def test_owner_reads_status_result_history_and_files(finished_task, api_client_for):
    client = api_client_for(finished_task.user)
    status = client.get(f"/api/v1/generation/status/{finished_task.pk}").json()
    assert status["status"] == "completed" and status["result_id"] == finished_task.images.get().pk
    result = client.get(f"/api/v1/generation/result/{finished_task.pk}").json()
    assert len(result["images"]) == 1
    file_response = client.get(result["images"][0]["url"])
    assert file_response.status_code == 200 and file_response["Content-Type"] == "image/png"
    assert b"".join(file_response.streaming_content) == _png()
    history = client.get("/api/v1/generation/history").json()
    assert [t["id"] for t in history["results"]] == [finished_task.pk]


def test_every_endpoint_hides_other_users_objects(finished_task, make_user, api_client_for):
    TaskPreview.objects.create(task=finished_task, image=b"jpeg")
    stranger = api_client_for(make_user("stranger"))
    image = finished_task.images.get()
    for url in (
        f"/api/v1/generation/status/{finished_task.pk}",
        f"/api/v1/generation/result/{finished_task.pk}",
        f"/api/v1/generation/preview/{finished_task.pk}",
        f"/api/v1/generation/images/{image.pk}/file",
        f"/api/v1/generation/images/{image.pk}/thumbnail",
    ):
        response = stranger.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert stranger.delete(f"/api/v1/generation/{finished_task.pk}").status_code == 404
    assert stranger.get("/api/v1/generation/history").json()["results"] == []
    assert GenerationTask.objects.filter(pk=finished_task.pk).exists()


def test_the_preview_of_a_task_without_a_frame_is_a_404_for_apps(finished_task, api_client_for):
    # The API's documented answer (the pages get 204, see test_pages).
    response = api_client_for(finished_task.user).get(f"/api/v1/generation/preview/{finished_task.pk}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_delete_removes_the_task_and_its_files(finished_task, api_client_for, django_capture_on_commit_callbacks):
    image = finished_task.images.get()
    storage, names = image.file.storage, [image.file.name, image.thumbnail.name]
    assert all(storage.exists(n) for n in names)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(finished_task.user).delete(f"/api/v1/generation/{finished_task.pk}")
    assert response.status_code == 204
    assert not GenerationTask.objects.filter(pk=finished_task.pk).exists()
    assert not any(storage.exists(n) for n in names)


def test_history_is_newest_first_and_paginated(catalog, make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    ids = [client.post("/api/v1/generation/create-async", {"prompt": f"p{i}"}, format="json").json()["id"]
           for i in range(5)]
    page = client.get("/api/v1/generation/history?limit=2").json()
    assert set(page) == {"next", "previous", "results"}
    assert [t["id"] for t in page["results"]] == ids[::-1][:2] and page["next"] and page["previous"] is None
    # `page_size`, the old name of `limit`, still works.
    assert len(client.get("/api/v1/generation/history?page_size=3").json()["results"]) == 3
    assert client.get("/api/v1/generation/history?status=bogus").status_code == 400


def test_unknown_api_path_and_method_get_the_json_error_body(make_user, api_client_for, settings):
    settings.DEBUG = False
    client = api_client_for(make_user())
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.put("/api/v1/models")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_health_reports_database_worker_and_backends(catalog, client):
    response = client.get("/api/v1/health")
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["worker"]["ok"] is False  # no qcluster in this test
    assert response.status_code == 503 and body["status"] == "degraded"


# --- the one error body, for every status ------------------------------------------


def test_error_body_on_400_401_403_404_405_415(catalog, make_user, api_client_for, settings):
    settings.DEBUG = False
    user = make_user()
    client = api_client_for(user)
    # 400: malformed JSON
    response = client.generic("POST", "/api/v1/generation/create-async", '{"prompt": ', content_type="application/json")
    _error(response, 400, "parse_error")
    # 401, with the scheme to use
    response = APIClient().get("/api/v1/generation/history")
    _error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"
    # 403: a session without its CSRF token (pages share the session)
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(user)
    _error(browser.post("/api/v1/generation/create-async", {"prompt": "x"}, format="json"), 403, "permission_denied")
    # 404 on unknown paths, for any method, even without a CSRF token
    _error(client.get("/api/v1/nothing-here"), 404, "not_found")
    _error(browser.post("/api/v1/nothing-here", {}, format="json"), 404, "not_found")
    _error(client.get("/api/elsewhere"), 404, "not_found")
    # 405
    response = client.put("/api/v1/generation/history")
    _error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]
    # 415
    response = client.generic("POST", "/api/v1/generation/create-async", "prompt", content_type="text/plain")
    _error(response, 415, "unsupported_media_type")


def test_error_body_on_413_for_a_body_over_the_limit(catalog, make_user, api_client_for, settings):
    settings.DEBUG = False
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    client = api_client_for(make_user())
    response = client.post("/api/v1/generation/create-async", {"prompt": "x" * 5000}, format="json")
    _error(response, 413, "too_large")
    response = client.post("/api/v1/nothing-here", {"prompt": "x" * 5000}, format="json")
    _error(response, 413, "too_large")
    assert client.post("/api/v1/generation/create-async", {"prompt": "small"}, format="json").status_code == 202


def test_the_handler_turns_a_too_large_body_met_inside_a_view_into_413():
    from django.core.exceptions import RequestDataTooBig

    from config.api_errors import api_exception_handler

    response = api_exception_handler(RequestDataTooBig("too big"), {})
    assert response.status_code == 413 and response.data["error"]["code"] == "too_large"


@pytest.mark.urls("tests.api_error_urls")
def test_error_body_on_500_with_debug_off(make_user, api_client_for, settings):
    settings.DEBUG = False
    client = api_client_for(make_user())
    client.raise_request_exception = False
    for url in ("/api/v1/test-boom", "/api/v1/test-boom-plain"):
        error = _error(client.get(url), 500, "server_error")
        assert "boom" not in error["message"]  # no internals leak


# --- cancel, retry, quota ---------------------------------------------------------


def test_cancel_a_pending_task_without_a_worker_then_409_once_finished(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    task_id = client.post("/api/v1/generation/create-async", {"prompt": "stop me"}, format="json").json()["id"]
    response = client.post(f"/api/v1/generation/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert GenerationTask.objects.get(pk=task_id).status == TaskStatus.CANCELLED
    _error(client.post(f"/api/v1/generation/{task_id}/cancel"), 409, "conflict")


def test_retry_runs_a_failed_task_again_and_refuses_a_completed_one(catalog, make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    failed = _task(user, catalog["checkpoint"], status=TaskStatus.FAILED, error_message="boom", error_code="x")
    done = _task(user, catalog["checkpoint"], status=TaskStatus.COMPLETED)
    response = client.post(f"/api/v1/generation/{failed.pk}/retry")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"] == failed.pk and body["status"] == "pending" and body["error_message"] is None
    assert body["retries"] == 1 and response["Location"].endswith(f"/api/v1/generation/status/{failed.pk}")
    _error(client.post(f"/api/v1/generation/{done.pk}/retry"), 409, "conflict")
    stranger = api_client_for(make_user())
    _error(stranger.post(f"/api/v1/generation/{done.pk}/cancel"), 404, "not_found")
    _error(stranger.post(f"/api/v1/generation/{failed.pk}/retry"), 404, "not_found")


def test_quota_endpoint_and_429_over_quota_on_create_and_retry(catalog, make_user, api_client_for):
    user = make_user(daily_image_quota=2)
    client = api_client_for(user)
    quota = client.get("/api/v1/quota").json()
    assert quota["limit"] == 2 and quota["used"] == 0 and quota["remaining"] == 2 and quota["in_flight"] == 0
    cancelled = _task(user, catalog["checkpoint"], status=TaskStatus.CANCELLED)
    assert client.post("/api/v1/generation/create-async", {"prompt": "a", "batch_size": 2},
                       format="json").status_code == 202
    quota = client.get("/api/v1/quota").json()
    assert quota["used"] == 2 and quota["remaining"] == 0 and quota["in_flight"] == 1
    for response in (
        client.post("/api/v1/generation/create-async", {"prompt": "b"}, format="json"),
        client.post(f"/api/v1/generation/{cancelled.pk}/retry"),
    ):
        error = _error(response, 429, "quota_exceeded")
        wait = int(response["Retry-After"])
        assert 0 < wait <= 86400 and error["retry_after"] == wait and error["limit"] == 2


def test_create_passes_the_token_and_new_parameters_to_the_service(catalog, make_user, api_client_for, monkeypatch):
    from accounts.models import ApiToken
    from generation.api import tasks as api

    seen = {}
    real = api.generation_create

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**{**kwargs, "template": None, "denoise": None, "callback_url": ""})

    monkeypatch.setattr(api, "generation_create", spy)
    user = make_user()
    client = api_client_for(user)
    response = client.post("/api/v1/generation/create-async", {
        "prompt": "p", "template": "some-template", "denoise": 0.5, "callback_url": "https://example.com/hook",
    }, format="json")
    assert response.status_code == 202, response.content
    assert seen["template"] == "some-template" and seen["denoise"] == 0.5
    assert seen["callback_url"] == "https://example.com/hook"
    assert isinstance(seen["api_token"], ApiToken) and seen["api_token"].user == user
    monkeypatch.undo()  # the real service judges the bounds
    _error(client.post("/api/v1/generation/create-async", {"prompt": "p", "denoise": 3}, format="json"), 400)


# --- downloads --------------------------------------------------------------------


def test_image_downloads_are_inline_or_attachment_with_the_right_type(finished_task, api_client_for):
    client = api_client_for(finished_task.user)
    image = finished_task.images.get()
    base = f"/api/v1/generation/images/{image.pk}"
    response = client.get(f"{base}/file")
    assert response["Content-Type"] == "image/png" and response.streaming
    assert response["Content-Disposition"].startswith("inline")
    response = client.get(f"{base}/file?download=1", HTTP_ACCEPT="image/*")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["Content-Disposition"] == f'attachment; filename="easel-{finished_task.pk}-0.png"'
    assert b"".join(response.streaming_content) == _png()
    response = client.get(f"{base}/thumbnail?download=true")
    assert response["Content-Type"] == "image/webp"
    assert response["Content-Disposition"] == f'attachment; filename="easel-{finished_task.pk}-0-thumb.webp"'
    # A missing image is the JSON error even for a client that asked for an image.
    _error(client.get("/api/v1/generation/images/999999/file", HTTP_ACCEPT="image/png"), 404, "not_found")


# --- history: cursor pages, filters, search, limits, query count --------------------


def test_history_cursor_pages_stay_stable_while_tasks_arrive(catalog, make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)

    def create(n):
        return [_task(user, catalog["checkpoint"], prompt=f"t{i}").pk for i in range(n)]

    first = create(5)
    page1 = client.get("/api/v1/generation/history?limit=2").json()
    assert [t["id"] for t in page1["results"]] == first[::-1][:2]
    create(2)  # newer tasks arrive between fetches
    page2 = client.get(page1["next"]).json()
    assert [t["id"] for t in page2["results"]] == first[::-1][2:4]
    create(1)
    page3 = client.get(page2["next"]).json()
    assert [t["id"] for t in page3["results"]] == first[::-1][4:] and page3["next"] is None
    # Going back from page 2 gives page 1 again, not the tasks that arrived since.
    back = client.get(page2["previous"]).json()
    assert [t["id"] for t in back["results"]] == first[::-1][:2]


def test_history_filters_and_search(catalog, make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    ck = catalog["checkpoint"]
    old = _task(user, ck, prompt="An OLD Lighthouse at dusk", status=TaskStatus.COMPLETED)
    mid = _task(user, ck, prompt="a cat", status=TaskStatus.FAILED, model_name="other-model")
    new = _task(user, ck, prompt="a lighthouse in fog", status=TaskStatus.PENDING)
    GenerationTask.objects.filter(pk=old.pk).update(created_at=datetime(2025, 1, 10, 12, tzinfo=dt_timezone.utc))
    GenerationTask.objects.filter(pk=mid.pk).update(created_at=datetime(2025, 2, 10, 12, tzinfo=dt_timezone.utc))
    GenerationTask.objects.filter(pk=new.pk).update(created_at=datetime(2025, 3, 10, 12, tzinfo=dt_timezone.utc))
    _task(make_user(), ck, prompt="someone else's lighthouse")

    def ids(query):
        response = client.get(f"/api/v1/generation/history?{query}")
        assert response.status_code == 200, response.content
        return [t["id"] for t in response.json()["results"]]

    assert ids("") == [new.pk, mid.pk, old.pk]
    assert ids("status=failed") == [mid.pk]
    assert ids("model=other-model") == [mid.pk]
    assert ids("model=demo-sd15") == [new.pk, old.pk]
    assert ids("q=LIGHTHOUSE") == [new.pk, old.pk]
    assert ids("q=lighthouse&status=completed") == [old.pk]
    assert ids("created_after=2025-02-10") == [new.pk, mid.pk]
    assert ids("created_before=2025-02-10") == [old.pk]
    assert ids("created_after=2025-02-10T12:00:00Z&created_before=2025-03-10T12:00:00%2B00:00") == [mid.pk]
    assert ids("created_after=2025-02-10T13:00:00") == [new.pk]  # naive: the server's time zone (UTC)
    for query, field in (("created_after=yesterday", "created_after"), ("created_before=2025-13-45", "created_before"),
                         ("created_after=2025-03-01&created_before=2025-02-01", "created_before"),
                         ("status=bogus", "status"), ("limit=0", "limit"), ("limit=abc", "limit"),
                         ("cursor=garbage", "cursor")):
        error = _error(client.get(f"/api/v1/generation/history?{query}"), 400, "invalid")
        assert field in error["fields"], (query, error)


def test_history_limit_defaults_to_20_and_is_clamped_to_100(catalog, make_user, api_client_for):
    user = make_user()
    GenerationTask.objects.bulk_create([
        GenerationTask(user=user, prompt=f"p{i}", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7,
                       sampler="euler", scheduler="normal", seed=i)
        for i in range(105)
    ])
    client = api_client_for(user)
    assert len(client.get("/api/v1/generation/history").json()["results"]) == 20
    assert len(client.get("/api/v1/generation/history?limit=7").json()["results"]) == 7
    page = client.get("/api/v1/generation/history?limit=500").json()
    assert len(page["results"]) == 100 and page["next"]


def test_history_query_count_does_not_grow_with_the_page(finished_task, api_client_for,
                                                         django_assert_max_num_queries):
    user = finished_task.user
    for i in range(10):
        task = _task(user, finished_task.checkpoint, prompt=f"more {i}", status=TaskStatus.COMPLETED)
        for index in range(2):
            image = GeneratedImage(task=task, index=index, width=8, height=8, seed=1, size_bytes=10)
            image.file.name = f"results/x/{task.pk}-{index}.png"
            image.save()
    client = api_client_for(user)
    # token + user (auth), the page, its images: never one query per task.
    with django_assert_max_num_queries(4):
        response = client.get("/api/v1/generation/history?limit=50")
    assert response.status_code == 200 and len(response.json()["results"]) == 11
    assert all(len(t["images"]) == 2 for t in response.json()["results"][:10])


# --- rate limits ------------------------------------------------------------------


def test_per_user_rate_limit_answers_429_with_retry_after(make_user, api_client_for, settings):
    _rates(settings, user="3/min")
    user = make_user()
    client, other_token_client = api_client_for(user), api_client_for(user)
    for _ in range(2):
        assert client.get("/api/v1/quota").status_code == 200
    assert other_token_client.get("/api/v1/quota").status_code == 200  # counted per user, not per token
    response = client.get("/api/v1/quota")
    error = _error(response, 429, "throttled")
    assert int(response["Retry-After"]) == error["retry_after"] > 0
    assert api_client_for(make_user()).get("/api/v1/quota").status_code == 200  # another user is not limited
    assert APIClient().get("/api/v1/health").status_code in (200, 503)  # monitoring is never throttled


def test_the_rate_limit_keeps_its_history_compact_and_reads_an_old_list(make_user, api_client_for, settings):
    """The request times are kept as an array (pickled as one block on every call, not
    float by float); a list stored by an earlier version still counts."""
    from array import array

    from django.core.cache import caches

    _rates(settings, user="3/min")
    user = make_user()
    client = api_client_for(user)
    key = f"throttle_user_{user.pk}"
    caches["default"].set(key, [time.time() - 1], 60)  # as DRF stored it before
    for _ in range(2):
        assert client.get("/api/v1/quota").status_code == 200
    history = caches["default"].get(key)
    assert isinstance(history, array) and len(history) == 3
    _error(client.get("/api/v1/quota"), 429, "throttled")


def test_models_say_whether_an_online_backend_has_them(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    [offline] = client.get("/api/v1/models").json()["results"]
    assert offline["name"] == "demo-sd15" and offline["online"] is False  # listed: tasks wait for it
    catalog["backend"].is_online = True
    catalog["backend"].save()
    [online] = client.get("/api/v1/models").json()["results"]
    assert online["online"] is True


# --- what a poll costs (issue 14) ----------------------------------------------------


def _ran(task, runs: int = 1) -> None:
    from django.utils import timezone

    from generation.models import TaskRun

    for number in range(1, runs + 1):
        TaskRun.objects.create(task=task, number=number, backend_name=f"gpu{number}", assigned_at=timezone.now(),
                               outcome="running" if number == runs and task.status == TaskStatus.PROCESSING
                               else "moved")


def _images(task, count: int) -> None:
    for index in range(count):
        image = GeneratedImage(task=task, index=index, width=8, height=8, seed=1, size_bytes=10)
        image.file.name = f"results/x/{task.pk}-{index}.png"
        image.save()


def _queries_on(captured, table: str) -> list[str]:
    return [q["sql"] for q in captured if f'FROM "{table}"' in q["sql"]]


def test_the_status_poll_costs_a_few_queries_whatever_the_task_holds(catalog, make_user, api_client_for,
                                                                      django_assert_num_queries, settings):
    from generation import outlook
    from models_catalog.models import WorkflowTemplate

    # The queue's shape kept, as in a running studio (generation.outlook): read once below.
    settings.EASEL_QUEUE_OUTLOOK_SECONDS = 600
    outlook.forget()

    user = make_user()
    client = api_client_for(user)
    template = WorkflowTemplate.objects.order_by("pk").first()  # as the studio makes tasks: with one

    pending = _task(user, template=template)
    processing = _task(user, status=TaskStatus.PROCESSING, template=template)
    _ran(processing)
    TaskPreview.objects.create(task=processing, image=b"frame")
    small = _task(user, status=TaskStatus.COMPLETED, template=template)
    _images(small, 1)
    _ran(small)
    large = _task(user, status=TaskStatus.COMPLETED, template=template)
    _images(large, 4)
    _ran(large, runs=3)
    client.get(f"/api/v1/generation/status/{pending.pk}")  # the queue's shape read
    # The token (with its user), and the task with its runs, images and a running task's
    # frame time joined to it: one statement each, whatever the task holds; a waiting
    # task's place: one count of its user's own waiting tasks.
    for task, statements in ((pending, 3), (processing, 2), (small, 2), (large, 2)):
        with django_assert_num_queries(statements):
            response = client.get(f"/api/v1/generation/status/{task.pk}")
        assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["images"]) == 4 and body["result_id"] == body["images"][0]["id"] and len(body["runs"]) == 3
    assert body["template"] == template.slug


def test_a_token_is_read_once_per_request(catalog, make_user, api_client_for):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = make_user()
    client = api_client_for(user)
    for _ in range(3):  # more tokens of the same user, which the check never needs to read
        api_client_for(user)
    task = _task(user)
    for path in (f"/api/v1/generation/status/{task.pk}", "/api/v1/generation/history", "/api/v1/auth/me"):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200, path
        assert len(_queries_on(captured, "accounts_apitoken")) == 1, (path, _queries_on(captured, "accounts_apitoken"))


def test_expired_tokens_go_when_the_user_is_issued_a_new_one(make_user, api_client_for):
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import ApiToken
    from accounts.services import token_create

    user, other = make_user(), make_user()
    client = api_client_for(user)
    old, _ = token_create(user=user)
    others, _ = token_create(user=other)
    ApiToken.objects.filter(pk__in=[old.pk, others.pk]).update(expiry=timezone.now() - timedelta(seconds=1))
    token_create(user=user)
    assert not ApiToken.objects.filter(pk=old.pk).exists()
    assert client.get("/api/v1/auth/me").status_code == 200  # the live ones still work
    assert ApiToken.objects.filter(pk=others.pk).exists()  # another user's are theirs to lose
    assert ApiToken.objects.filter(user=user).count() == 2


def test_task_answers_build_their_fields_once_and_write_what_drf_writes(catalog, make_user, api_client_for,
                                                                        monkeypatch, rf):
    from rest_framework import serializers
    from rest_framework.request import Request

    from generation.representation import ImageSerializer, RunSerializer, TaskDetailSerializer, TaskSerializer
    from models_catalog.models import WorkflowTemplate

    user = make_user()
    client = api_client_for(user)
    tasks = []
    for status in (TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED):
        task = _task(user, status=status, error_code="x" if status == TaskStatus.FAILED else "",
                     template=WorkflowTemplate.objects.order_by("pk").first() if status != TaskStatus.PENDING else None)
        _ran(task, runs=2)
        if status == TaskStatus.COMPLETED:
            _images(task, 2)
        tasks.append(task)
    client.get(f"/api/v1/generation/status/{tasks[0].pk}")  # every class's fields built once here
    client.get("/api/v1/generation/history")
    built = []
    real = serializers.ModelSerializer.get_fields
    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", lambda self: built.append(self) or real(self))
    for task in tasks:
        assert client.get(f"/api/v1/generation/status/{task.pk}").status_code == 200
    assert len(client.get("/api/v1/generation/history").json()["results"]) == 4
    assert built == []  # neither per request nor per task or image

    # The same answer as DRF's own field-by-field loop over freshly built fields.
    monkeypatch.undo()
    request = Request(rf.get("/api/v1/generation/history"))
    for task in GenerationTask.objects.filter(pk__in=[t.pk for t in tasks]):
        for cls in (TaskSerializer, TaskDetailSerializer):
            fast = cls(task, context={"request": request}).data
            slow = serializers.Serializer.to_representation(cls(task, context={"request": request}), task)
            images = [serializers.Serializer.to_representation(ImageSerializer(i, context={"request": request}), i)
                      for i in sorted(task.images.all(), key=lambda i: i.index)] if task.status == "completed" else []
            assert slow["images"] == images
            if cls is TaskDetailSerializer:
                slow["runs"] = [serializers.Serializer.to_representation(RunSerializer(r), r)
                                for r in task.runs.order_by("number")]
            assert fast == slow, cls
