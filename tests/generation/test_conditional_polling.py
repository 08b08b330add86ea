"""Cheap polling: what a client that asks again and again is answered.

From the issue "The studio workspace: updates pushed, not polled": the status call and the
task page's state.json carry a weak ETag and answer 304 with no body while nothing
changed; live frames have a version in their URL and come from a cache keyed by (task,
version), so asking for the same frame again never reads its picture from the database.
"""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from generation.models import GenerationTask, TaskPreview, TaskRun, TaskStatus, preview_version

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user(username="alice", password=PASSWORD)


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user(username="bob", password=PASSWORD)


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob):
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def running(alice):
    task = GenerationTask.objects.create(
        user=alice, prompt="a red fox", model_name="demo-model", width=64, height=64, steps=8, cfg=7.0,
        sampler="euler", scheduler="normal", seed=42, status=TaskStatus.PROCESSING, progress_max=8,
        started_at=timezone.now(),
    )
    TaskRun.objects.create(task=task, number=1, backend_name="gpu-1", assigned_at=timezone.now())
    return task


def write_frame(task, image: bytes) -> TaskPreview:
    """A frame written the way the runner writes it (generation/fleet/runner.py)."""
    preview, _created = TaskPreview.objects.update_or_create(
        task_id=task.pk, defaults={"image": image, "content_type": "image/jpeg"},
    )
    return preview


def _status(client, task, etag=None):
    headers = {"HTTP_IF_NONE_MATCH": etag} if etag else {}
    return client.get(reverse("api-generation-status", args=[task.pk]), **headers)


def _preview_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "generation_taskpreview" in q["sql"]]


# --- the status call ---------------------------------------------------------------------------


def test_status_answers_304_while_nothing_changed(running, api_client_for):
    client = api_client_for(running.user)
    first = _status(client, running)
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('W/"')
    assert first["Cache-Control"] == "private, no-cache"
    again = _status(client, running, etag)
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == etag and again["Cache-Control"] == "private, no-cache"
    # Weak comparison: the same tag without W/, or among others, or "*", matches too.
    assert _status(client, running, etag[2:]).status_code == 304
    assert _status(client, running, f'"other", {etag}').status_code == 304
    assert _status(client, running, "*").status_code == 304
    assert _status(client, running, 'W/"other"').status_code == 200
    # Another user's task stays 404, whatever ETag is sent.
    other = api_client_for(get_user_model().objects.create_user(username="eve", password=PASSWORD))
    assert _status(other, running, etag).status_code == 404


@pytest.mark.parametrize("change", ["progress", "node", "status", "message", "frame", "new frame", "run", "language"])
def test_status_answers_200_after_a_change(change, running, api_client_for):
    client = api_client_for(running.user)
    write_frame(running, b"frame one")
    first = _status(client, running)
    etag, body = first["ETag"], first.json()
    headers = {}
    rows = GenerationTask.objects.filter(pk=running.pk)
    if change == "progress":  # as the pump writes progress: an UPDATE, no save()
        rows.update(progress_value=1)
    elif change == "node":
        rows.update(progress_node="VAEDecode")
    elif change == "status":
        rows.update(status=TaskStatus.COMPLETED, completed_at=timezone.now())
    elif change == "message":
        rows.update(status_message="Backend unreachable, retrying")
    elif change == "frame":
        TaskPreview.objects.filter(task_id=running.pk).delete()
    elif change == "new frame":
        write_frame(running, b"frame two")
    elif change == "run":
        TaskRun.objects.filter(task=running).update(ended_at=timezone.now(), outcome="moved")
    elif change == "language":
        headers = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}
    answer = client.get(reverse("api-generation-status", args=[running.pk]), HTTP_IF_NONE_MATCH=etag, **headers)
    assert answer.status_code == 200, change
    assert answer["ETag"] != etag
    if change == "new frame":
        assert answer.json()["preview_url"] != body["preview_url"]
        assert _status(client, running, answer["ETag"]).status_code == 304


def test_the_status_schema_documents_the_validators(client):
    import yaml

    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    operation = schema["paths"]["/api/v1/generation/status/{task_id}"]["get"]
    assert any(p["name"] == "If-None-Match" and p["in"] == "header" for p in operation["parameters"])
    assert "304" in operation["responses"] and "content" not in operation["responses"]["304"]
    assert "ETag" in operation["responses"]["200"]["headers"]
    preview = schema["paths"]["/api/v1/generation/preview/{task_id}"]["get"]
    assert any(p["name"] == "v" and p["in"] == "query" for p in preview["parameters"])


# --- live frames ---------------------------------------------------------------------------


def test_each_frame_has_its_own_version(running):
    first = write_frame(running, b"one")
    second = write_frame(running, b"two")  # the runner's update_or_create again
    assert second.version != first.version
    assert TaskPreview.objects.get(task_id=running.pk).version == second.version
    assert preview_version(TaskPreview.objects.get(task_id=running.pk).updated_at) == second.version


def test_a_versioned_frame_comes_from_the_cache(running, alice_client, api_client_for):
    frame = write_frame(running, b"frame one")
    url = alice_client.get(reverse("generation:task_state", args=[running.pk])).json()["preview_url"]
    assert url == f"{reverse('generation:task_preview', args=[running.pk])}?v={frame.version}"
    first = alice_client.get(url)
    assert first.status_code == 200 and first.content == b"frame one"
    assert first["Cache-Control"] == "private, max-age=60, immutable"
    with CaptureQueriesContext(connection) as queries:
        again = alice_client.get(url)
    assert again.status_code == 200 and again.content == b"frame one"
    assert again["Cache-Control"] == "private, max-age=60, immutable"
    assert _preview_queries(queries) == []  # the picture is not read again, nor its row
    # The API's own URL (from the status answer) is served from the same cache.
    api = api_client_for(running.user)
    api_url = api.get(reverse("api-generation-status", args=[running.pk])).json()["preview_url"]
    assert api_url.endswith(f"?v={frame.version}")
    with CaptureQueriesContext(connection) as queries:
        answer = api.get(api_url)
    assert answer.status_code == 200 and answer.content == b"frame one" and _preview_queries(queries) == []
    # The client holds it: 304.
    assert api.get(api_url, HTTP_IF_NONE_MATCH=answer["ETag"]).status_code == 304


def test_the_bare_url_is_never_kept_and_reads_the_picture_once_per_frame(running, alice_client):
    url = reverse("generation:task_preview", args=[running.pk])
    assert alice_client.get(url).status_code == 204  # no frame yet (the page's answer; the API's is 404)
    write_frame(running, b"frame one")
    first = alice_client.get(url)
    assert first.status_code == 200 and first.content == b"frame one" and first["Cache-Control"] == "no-store"
    with CaptureQueriesContext(connection) as queries:
        again = alice_client.get(url)
    assert again.content == b"frame one" and again["Cache-Control"] == "no-store"
    assert len(_preview_queries(queries)) == 1 and '"image"' not in _preview_queries(queries)[0]
    assert alice_client.get(url, HTTP_IF_NONE_MATCH=again["ETag"]).status_code == 304
    write_frame(running, b"frame two")
    assert alice_client.get(url, HTTP_IF_NONE_MATCH=again["ETag"]).content == b"frame two"


def test_an_old_version_gets_the_newest_frame_not_to_be_kept(running, alice_client):
    old = write_frame(running, b"frame one")
    write_frame(running, b"frame two")
    answer = alice_client.get(reverse("generation:task_preview", args=[running.pk]) + f"?v={old.version}")
    assert answer.content == b"frame two" and answer["Cache-Control"] == "no-store"


def test_other_users_never_get_a_frame_even_a_cached_one(running, alice_client, bob_client, api_client_for, bob):
    frame = write_frame(running, b"frame one")
    page_url = reverse("generation:task_preview", args=[running.pk])
    api_url = reverse("api-generation-preview", args=[running.pk])
    assert alice_client.get(f"{page_url}?v={frame.version}").status_code == 200  # now in the cache
    for url in (page_url, f"{page_url}?v={frame.version}"):
        assert bob_client.get(url).status_code == 404
    for url in (api_url, f"{api_url}?v={frame.version}"):
        assert api_client_for(bob).get(url).status_code == 404
    assert bob_client.get(reverse("generation:task_state", args=[running.pk])).status_code == 404


def test_a_malformed_version_is_400_on_the_api_and_the_newest_frame_on_the_page(running, alice_client,
                                                                                 api_client_for):
    write_frame(running, b"frame one")
    api = api_client_for(running.user)
    answer = api.get(reverse("api-generation-preview", args=[running.pk]) + "?v=abc")
    assert answer.status_code == 400 and "v" in answer.json()["error"]["fields"]
    page = alice_client.get(reverse("generation:task_preview", args=[running.pk]) + "?v=abc")
    assert page.content == b"frame one" and page["Cache-Control"] == "no-store"


def test_a_retried_task_never_shows_an_earlier_runs_frame(running, alice_client):
    first = write_frame(running, b"earlier run")
    url = alice_client.get(reverse("generation:task_state", args=[running.pk])).json()["preview_url"]
    assert alice_client.get(url).content == b"earlier run"
    TaskPreview.objects.filter(task_id=running.pk).delete()  # the run ended; the next one writes anew
    second = write_frame(running, b"next run")
    assert second.version != first.version
    url = alice_client.get(reverse("generation:task_state", args=[running.pk])).json()["preview_url"]
    assert alice_client.get(url).content == b"next run"


# --- the task page's state.json ----------------------------------------------------------------


def test_state_answers_304_while_nothing_changed_and_200_after(running, alice_client):
    url = reverse("generation:task_state", args=[running.pk])
    first = alice_client.get(url)
    etag = first["ETag"]
    assert first.status_code == 200 and first.json()["preview_url"] is None
    assert first["Cache-Control"] == "private, no-cache"
    again = alice_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    GenerationTask.objects.filter(pk=running.pk).update(progress_value=2)
    changed = alice_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["line"] == "Step 2 of 8"
    frame = write_frame(running, b"frame")
    framed = alice_client.get(url, HTTP_IF_NONE_MATCH=changed["ETag"])
    assert framed.status_code == 200 and framed.json()["preview_url"].endswith(f"?v={frame.version}")
    GenerationTask.objects.filter(pk=running.pk).update(status=TaskStatus.COMPLETED)
    done = alice_client.get(url, HTTP_IF_NONE_MATCH=framed["ETag"])
    assert done.status_code == 200 and done.json()["status"] == "completed" and done.json()["preview_url"] is None
