"""A waiting task's place in its user's view of the fair queue and its estimated start and
finish (generation.outlook), as the status endpoint, the stream and the pages say them.

From the issue "The studio workspace": "The status endpoint and the stream report the
position in the user's view of the queue and an estimated start and finish time, from the
measured durations per model × backend. Show them on the page ("3rd in line, about 40 s")."
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from generation import outlook
from generation.outlook import task_outlook
from generation.models import GenerationTask, TaskEvent, TaskEventKind, TaskHourStat, TaskStatus
from generation.services import generation_create
from models_catalog.models import Checkpoint, ComfyBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(catalog):
    """One online backend with models x and y; nothing measured yet."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    ComfyBackend.objects.all().delete()
    gpu = ComfyBackend.objects.create(name="gpu", base_url="http://gpu.invalid", is_online=True, max_in_flight=1)
    for name in ("x", "y"):
        Checkpoint.objects.create(name=name, ckpt_name=f"{name}.safetensors").backends.add(gpu)
    return gpu


def create(user, model="x"):
    # No commit in these tests: nothing dispatches, every task waits unassigned.
    return generation_create(user=user, prompt="p", model_name=model, width=64, height=64)


def place(task) -> int | None:
    return task_outlook(GenerationTask.objects.get(pk=task.pk)).position


def measured(model: str, backend, seconds: float, runs: int = 4):
    """`runs` completed runs of `seconds` each, an hour ago (the rollups)."""
    TaskHourStat.objects.create(hour=timezone.now() - timedelta(hours=1), status=TaskStatus.COMPLETED,
                                model_name=model, backend=backend, tasks=runs, images=runs,
                                busy_seconds=seconds * runs)


def test_a_light_user_is_not_behind_a_heavy_users_backlog(queue, make_user):
    heavy, light = make_user("heavy", max_concurrent_tasks=20), make_user("light")
    backlog = [create(heavy) for _ in range(10)]
    late = create(light)
    # Turns alternate: heavy (its oldest task is older) first, then light. Not 11th.
    assert place(late) == 2
    # Heavy's own 5th task waits behind its 4 earlier ones and light's one.
    assert place(backlog[4]) == 6
    assert place(backlog[0]) == 1


def test_the_user_served_longest_ago_goes_first(queue, make_user):
    first, second = make_user("first"), make_user("second")
    a = create(first)
    b = create(second)
    # `first` was just served: `second` (never served) takes the next turn.
    type(first).objects.filter(pk=first.pk).update(last_served_at=timezone.now())
    assert (place(b), place(a)) == (1, 2)


def test_a_higher_priority_tier_goes_before_everyone(queue, make_user):
    plain, vip = make_user("plain"), make_user("vip", priority=5)
    mine = create(plain)
    for _ in range(3):
        create(vip)
    assert place(mine) == 4


def test_estimates_come_from_measured_runs_of_the_model_on_the_backend(queue, make_user):
    measured("x", queue, 10.0)
    measured("y", queue, 30.0)
    user = make_user(max_concurrent_tasks=10)
    tasks = [create(user, "x") for _ in range(3)]
    third = GenerationTask.objects.get(pk=tasks[2].pk)
    seen = task_outlook(third)
    now = timezone.now()
    # Two ahead on one backend, at the mean of everyone's runs (20 s): about 40 s to start,
    # then one run of x (the model's own mean, 10 s).
    assert seen.position == 3
    assert abs((seen.estimated_start_at - now).total_seconds() - 40) <= 6
    assert abs((seen.estimated_finish_at - seen.estimated_start_at).total_seconds() - 10) <= 5
    # A second backend halves the wait.
    ComfyBackend.objects.create(name="gpu2", base_url="http://gpu2.invalid", is_online=True)
    outlook.forget()
    assert abs((task_outlook(third).estimated_start_at - now).total_seconds() - 20) <= 6


def test_a_running_task_is_expected_one_mean_run_after_it_started(queue, make_user):
    measured("x", queue, 12.0)
    task = create(make_user())
    started = timezone.now() - timedelta(seconds=2)
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.PROCESSING, backend=queue, started_at=started)
    seen = task_outlook(GenerationTask.objects.get(pk=task.pk))
    assert seen.position is None and seen.estimated_start_at == started
    assert abs((seen.estimated_finish_at - started).total_seconds() - 12) <= 3


def test_nothing_measured_or_no_backend_online_gives_no_estimate(queue, make_user):
    task = create(make_user())
    seen = task_outlook(GenerationTask.objects.get(pk=task.pk))
    assert (seen.position, seen.estimated_start_at, seen.estimated_finish_at) == (1, None, None)
    measured("x", queue, 10.0)
    ComfyBackend.objects.update(is_online=False)
    outlook.forget()
    seen = task_outlook(GenerationTask.objects.get(pk=task.pk))
    assert (seen.position, seen.estimated_start_at) == (1, None)


def test_recent_completions_count_before_the_rollups_have_them(queue, make_user):
    user = make_user()
    now = timezone.now()
    for _ in range(3):
        done = create(user)
        GenerationTask.objects.filter(pk=done.pk).update(
            status=TaskStatus.COMPLETED, backend=queue, started_at=now - timedelta(seconds=8), completed_at=now)
    waiting = GenerationTask.objects.get(pk=create(user).pk)
    seen = task_outlook(waiting)
    assert abs((seen.estimated_finish_at - seen.estimated_start_at).total_seconds() - 8) <= 5


def test_the_status_endpoint_the_stream_and_the_page_say_it(queue, make_user, api_client_for, client):
    from generation.api.event_hub import positions
    from generation.api.events import event_text

    measured("x", queue, 20.0)
    other, user = make_user("other"), make_user("me", max_concurrent_tasks=5)
    create(other)
    create(user)
    mine = create(user)
    body = api_client_for(user).get(f"/api/v1/generation/status/{mine.pk}").json()
    assert body["queue"]["position"] == 3
    assert body["queue"]["estimated_start_at"].endswith("Z") and body["queue"]["estimated_finish_at"]
    # The stream's `queued` event says the same.
    event = TaskEvent.objects.filter(task_id=mine.pk, kind=TaskEventKind.QUEUED).get()
    text = event_text(event, request=_request(), language="en", queue=positions([event]))
    assert '"position":3' in text and '"estimated_start_at":"' in text
    # The page: the place and the wait, in words.
    client.force_login(user)
    page = client.get(reverse("generation:task", args=[mine.pk])).content.decode()
    assert "3rd in the queue, starts in about" in page
    # Finished: no place, no estimate.
    GenerationTask.objects.filter(pk=mine.pk).update(status=TaskStatus.CANCELLED, completed_at=timezone.now())
    assert api_client_for(user).get(f"/api/v1/generation/status/{mine.pk}").json()["queue"] is None


def test_in_chinese(queue, make_user, client):
    measured("x", queue, 20.0)
    user = make_user()
    task = create(user)
    client.force_login(user)
    page = client.get(reverse("generation:task", args=[task.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "约" in page and "秒" in page


def _request():
    from django.test import RequestFactory

    return RequestFactory().get("/api/v1/events")
