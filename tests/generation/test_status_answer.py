"""The status poll's answer, written by hand for speed (generation.representation.
task_status_answer), is TaskDetailSerializer's answer byte for byte, for every status, and
keeps the shape app clients were promised (docs/api-contract.md).

From the issue "The studio workspace: updates pushed, not polled": the status call got
cheaper (statements compiled once, no serializer fields), and an app must not see a
difference.
"""
from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from generation.models import GeneratedImage, GenerationTask, TaskPreview, TaskRun, TaskStatus
from generation.representation import TaskDetailSerializer
from models_catalog.builtin import ensure_builtin_templates
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import template_default

pytestmark = pytest.mark.django_db

# The task as the contract shows it: these fields, these types.
CONTRACT = {
    "id": int, "user_id": int, "prompt": str, "model_name": str, "status": str,
    "result_id": (int, type(None)), "error_message": (str, type(None)), "created_at": str,
    "completed_at": (str, type(None)),
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture(autouse=True)
def _one_queue_snapshot(settings):
    """The queue's shape read once and kept (generation.outlook), as in a running
    studio: the serializer's answer and the view's then read the same snapshot, and the
    poll counts only its own statements."""
    from generation import outlook

    settings.EASEL_QUEUE_OUTLOOK_SECONDS = 600
    outlook.forget()
    yield
    outlook.forget()


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user(username="poller", password="correct horse battery")


@pytest.fixture
def template(db):
    ensure_builtin_templates(WorkflowTemplate)
    return template_default()


def _task(owner, template, **extra) -> GenerationTask:
    values = dict(
        user=owner, prompt="a lighthouse at dusk", negative_prompt="fog", model_name="demo-sd15", width=64,
        height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=7, template=template,
        inputs={"lora": None, "strength": 0.5}, callback_url="https://example.com/hook",
    )
    values.update(extra)
    return GenerationTask.objects.create(**values)


def _run(task, number, **extra) -> TaskRun:
    now = timezone.now()
    values = dict(task=task, number=number, backend_name="gpu-1", assigned_at=now, submitted_at=now,
                  started_at=now)
    values.update(extra)
    return TaskRun.objects.create(**values)


def _pending(owner, template):
    return _task(owner, template, status_message="Backend unreachable, retrying",
                 status_params={"msgid": "Backend unreachable, retrying"})


def _processing(owner, template):
    task = _task(owner, template, status=TaskStatus.PROCESSING, progress_value=3, progress_max=7,
                 progress_node="KSampler", started_at=timezone.now())
    _run(task, 1)
    return task


def _processing_with_frame(owner, template):
    task = _processing(owner, template)
    TaskPreview.objects.create(task=task, image=b"frame")
    return task


def _completed(owner, template):
    now = timezone.now()
    task = _task(owner, template, status=TaskStatus.COMPLETED, started_at=now - datetime.timedelta(seconds=3),
                 completed_at=now, progress_value=4, progress_max=4, batch_size=2, denoise=0.6)
    for index in (1, 0):  # stored out of order: the answer lists them by index
        image = GeneratedImage(task=task, index=index, width=64, height=64, seed=7 + index, size_bytes=100 + index)
        image.file.save(f"r{index}.png", ContentFile(b"png"), save=False)
        image.thumbnail.save(f"t{index}.webp", ContentFile(b"webp"), save=False)
        image.save()
    # Written out of order: the answer lists them oldest first.
    _run(task, 2, backend_name="gpu-2", ended_at=now, outcome="completed", ended_by="completion")
    _run(task, 1, ended_at=now, outcome="moved", ended_by="fail_over", error_message="gpu-1 went away")
    return task


def _failed(owner, template):
    return _task(
        owner, template, status=TaskStatus.FAILED, completed_at=timezone.now(), error_code="validation_error",
        error_message="Steps: too many", error_fields={"steps": ["Too many steps."], "__all__": ["Bad graph."]},
        error_params={"msgid": "Steps: too many"},
    )


def _cancelled(owner, template):
    task = _task(owner, template, status=TaskStatus.CANCELLED, completed_at=timezone.now(), retries=1,
                 previous_error_message="Timed out")
    _run(task, 1, ended_at=timezone.now(), outcome="cancelled", ended_by="cancel")
    return task


CASES = {
    "pending": _pending, "processing": _processing, "processing with a frame": _processing_with_frame,
    "completed with images": _completed, "failed": _failed, "cancelled": _cancelled,
}


def _reference(task, *, user, language: str) -> bytes:
    """TaskDetailSerializer's answer, as the view gave it before it was written by hand."""
    django_request = APIRequestFactory().get(f"/api/v1/generation/status/{task.pk}")
    django_request.user = user
    row = GenerationTask.objects.select_related("template").get(pk=task.pk)
    with translation.override(language):
        return JSONRenderer().render(TaskDetailSerializer(row, context={"request": Request(django_request)}).data)


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_answer_is_the_serializers_byte_for_byte(case, language, owner, template, api_client_for):
    task = CASES[case](owner, template)
    client = api_client_for(owner)
    response = client.get(f"/api/v1/generation/status/{task.pk}", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    assert response.content == _reference(task, user=owner, language=language)
    body = response.json()
    for name, kind in CONTRACT.items():
        assert isinstance(body[name], kind), (name, body[name])
    assert body["status"] == task.status
    assert ISO.match(body["created_at"])
    assert body["completed_at"] is None or ISO.match(body["completed_at"])


def test_the_answers_say_what_each_status_holds(owner, template, api_client_for):
    client = api_client_for(owner)
    answers = {case: client.get(f"/api/v1/generation/status/{make(owner, template).pk}").json()
               for case, make in CASES.items()}
    done = answers["completed with images"]
    assert [i["index"] for i in done["images"]] == [0, 1] and done["result_id"] == done["images"][0]["id"]
    assert done["images"][0]["url"].startswith("http://testserver/api/v1/generation/images/")
    assert [r["number"] for r in done["runs"]] == [1, 2] and done["runs"][0]["error"] == "gpu-1 went away"
    assert done["progress"]["fraction"] == 1.0 and done["denoise"] == 0.6
    assert answers["failed"]["error_message"] == "Steps: too many"
    assert answers["failed"]["error_fields"] == {"steps": ["Too many steps."], "__all__": ["Bad graph."]}
    assert answers["pending"]["status_message"] == "Backend unreachable, retrying"
    running, framed = answers["processing"], answers["processing with a frame"]
    assert running["has_preview"] is False and running["preview_url"].endswith(f"/preview/{running['id']}")
    assert framed["has_preview"] is True and re.search(r"/preview/\d+\?v=\d+$", framed["preview_url"])
    assert running["progress"] == {"value": 3, "max": 7, "fraction": 0.4286, "node": "KSampler"}
    assert answers["cancelled"]["preview_url"] is None and answers["cancelled"]["retries"] == 1


@pytest.mark.parametrize("case, statements", [
    # The token (with its user), and the task with its template slug, frame time, runs and
    # images joined: one round trip each; a waiting task's place in the queue: a count of
    # its user's own waiting tasks (the rest of the queue's shape is a kept snapshot).
    ("pending", 3), ("processing with a frame", 2), ("completed with images", 2),
])
def test_the_poll_reads_each_thing_once(case, statements, owner, template, api_client_for):
    task = CASES[case](owner, template)
    client = api_client_for(owner)
    client.get(f"/api/v1/generation/status/{task.pk}")  # the statements compiled
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/api/v1/generation/status/{task.pk}").status_code == 200
    assert len(queries.captured_queries) == statements, [q["sql"] for q in queries.captured_queries]
    assert not [q for q in queries.captured_queries if "generation_taskpreview\".\"image" in q["sql"]]


def test_staff_read_any_task_and_others_get_404(owner, template, api_client_for):
    task = _completed(owner, template)
    other = get_user_model().objects.create_user(username="other", password="correct horse battery")
    assert api_client_for(other).get(f"/api/v1/generation/status/{task.pk}").status_code == 404
    staff = get_user_model().objects.create_user(username="staff", password="correct horse battery", is_staff=True)
    response = api_client_for(staff).get(f"/api/v1/generation/status/{task.pk}")
    assert response.status_code == 200 and response.json()["user_id"] == owner.pk
    assert api_client_for(owner).get("/api/v1/generation/status/999999").status_code == 404


def test_a_bad_or_expired_token_is_still_refused(owner, template, api_client_for):
    from accounts.models import ApiToken

    task = _pending(owner, template)
    client = api_client_for(owner)
    assert client.get(f"/api/v1/generation/status/{task.pk}").status_code == 200
    ApiToken.objects.filter(user=owner).update(expiry=timezone.now() - datetime.timedelta(seconds=1))
    assert client.get(f"/api/v1/generation/status/{task.pk}").status_code == 401
    assert not ApiToken.objects.filter(user=owner).exists()  # knox's own: the expired token goes
    client.credentials(HTTP_AUTHORIZATION="Bearer " + "0" * 64)
    assert client.get(f"/api/v1/generation/status/{task.pk}").status_code == 401
    owner.is_active = False
    owner.save()
    assert api_client_for(owner).get(f"/api/v1/generation/status/{task.pk}").status_code == 401
