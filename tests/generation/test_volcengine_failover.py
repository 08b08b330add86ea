"""Fail-over of tasks already submitted to a VolcEngine backend, with the same rules as a ComfyUI backend's:

- VolcEngine lost the task (`expired`, `not_found`): it holds nothing, so the task goes back to the queue and is
  sent again (one new submit per lost id), within the task's execution timeout from its first start; after that it
  fails as `provider_task_lost`;
- the backend stops answering the polls past the grace period and another backend offers the model: the task moves
  there and completes; with nowhere else to go it keeps polling and completes when the backend is back.

Stand-ins on real ports driven by the official SDK, killed (SIGKILL) or frozen (SIGSTOP) for real. The runs happen in
this process (no qcluster: nothing else may take the task, and the settings under test apply), as in
test_volcengine_backend: a task moved back to the queue is placed again by the runner's own dispatch, and the test
runs its next attempt.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from generation.fleet.dispatch import dispatch
from generation.fleet.runner import task_run
from generation.models import GenerationTask
from generation.services import generation_create
from models_catalog.models import ComfyBackend, WorkflowTemplate
from models_catalog.services import backend_check, volc_models_apply
from tests.conftest import VolcStandin, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

MODEL = "jimeng_t2i_v31"
PROVIDER_ID = re.compile(r"\b\d{19}\b")


@pytest.fixture
def other_standin():
    standin = VolcStandin(free_port())
    standin.start()
    yield standin
    if standin.proc is not None and standin.proc.poll() is None:
        os.kill(standin.proc.pid, signal.SIGCONT)
    standin.stop()


def _backend(name: str, standin: VolcStandin, models: list[str]) -> ComfyBackend:
    backend = ComfyBackend.objects.create(
        name=name, kind=ComfyBackend.KIND_VOLCENGINE, base_url=standin.url, access_key_id=standin.access_key_id,
        secret_access_key=standin.secret_access_key, offered_models=models, requests_per_second=20, max_in_flight=4)
    volc_models_apply(backend=backend)
    assert backend_check(backend=backend), backend.last_error
    return backend


@pytest.fixture
def catalog(transactional_db, no_cluster, settings):
    from models_catalog.builtin import ensure_builtin_templates

    ensure_builtin_templates(WorkflowTemplate)
    # A frozen stand-in answers no poll: each one gives up after a second, so the grace period is what counts.
    settings.EASEL_VOLCENGINE_HTTP_TIMEOUT = 1.0
    settings.COMFYUI_HTTP_TIMEOUT = 1.0  # the health check's probe of an offline backend
    settings.EASEL_FAILOVER_GRACE_SECONDS = 2.0


def assigned(make_user) -> GenerationTask:
    user = make_user(max_concurrent_tasks=5)
    task = generation_create(user=user, prompt="a lighthouse at dusk", model_name=MODEL, width=512, height=512)
    dispatch(probe=False)
    task.refresh_from_db()
    assert task.backend_id is not None
    return task


def in_thread(task_id: int) -> threading.Thread:
    def run():
        try:
            task_run(task_id=task_id)
        finally:
            connections.close_all()

    job = threading.Thread(target=run)
    job.start()
    return job


def runs(task: GenerationTask) -> list[tuple]:
    return [(r.backend_name, r.outcome, r.ended_by, r.error_code) for r in task.runs.order_by("number")]


# --- the provider lost the task ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, why", [
    ("expire_next", "the VolcEngine task expired before its pictures were fetched"),
    ("forget_next", "VolcEngine no longer knows this task"),
])
def test_a_task_the_provider_lost_is_sent_again_once_and_completes(catalog, volc_standin, make_user, fault, why):
    backend = _backend("volc", volc_standin, [MODEL])
    volc_standin.faults(**{fault: True})
    task = assigned(make_user)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    # Back in the queue with nothing of the lost task left (the next run submits anew), and placed again.
    assert task.status == "pending" and not task.provider_task_id and task.submitted_at is None
    assert task.backend_id == backend.pk
    assert volc_standin.stats()["submissions"] == 1
    [moved, placed] = task.runs.order_by("number")
    assert (moved.outcome, moved.ended_by) == ("moved", "fail_over")
    assert (placed.outcome, placed.submitted_at) == ("running", None)  # its next attempt, not sent yet
    assert why in moved.error_message and "moved back to the queue to be sent again" in moved.error_message
    [lost_id] = PROVIDER_ID.findall(moved.error_message)

    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert volc_standin.stats()["submissions"] == 2  # exactly one more for the lost id
    assert task.provider_task_id and task.provider_task_id != lost_id
    assert task.images.count() == 1
    assert runs(task) == [("volc", "moved", "fail_over", ""), ("volc", "completed", "completion", "")]


def test_a_task_lost_again_once_its_time_is_used_up_fails_as_lost(catalog, volc_standin, make_user, settings):
    """Moves are bounded as a ComfyUI task's are: by the execution timeout from the first start (a move keeps it)."""
    _backend("volc", volc_standin, [MODEL])
    settings.EASEL_EXECUTION_TIMEOUT = 10
    settings.EASEL_VOLCENGINE_HTTP_TIMEOUT = 5.0  # the held answers below are slow, not lost
    WorkflowTemplate.objects.update(execution_timeout=10)
    volc_standin.faults(expire_next=True)
    task = assigned(make_user)
    task_run(task_id=task.pk)
    assert GenerationTask.objects.get(pk=task.pk).status == "pending"  # within its time: moved, sent again
    # The first start was 7 s ago: the next submit (held 2 s) lands inside the 10 s, its loss (2 s more) after.
    GenerationTask.objects.filter(pk=task.pk).update(started_at=timezone.now() - timedelta(seconds=7))
    volc_standin.faults(expire_next=True, delay=2)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "provider_task_lost"), (task.status, task.error_message)
    assert "expired" in task.error_message
    assert volc_standin.stats()["submissions"] == 2
    assert runs(task) == [("volc", "moved", "fail_over", ""), ("volc", "failed", "failure", "provider_task_lost")]


# --- the backend stops answering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_backend_gone_past_the_grace_period_hands_the_task_to_another_offering_the_model(
        catalog, volc_standin, other_standin, make_user, how):
    standins = {}
    for name, standin in (("volc-a", volc_standin), ("volc-b", other_standin)):
        standins[_backend(name, standin, [MODEL]).pk] = standin
        standin.faults(generate_seconds=30)  # whichever runs it first never finishes in time
    task = assigned(make_user)
    first_pk = task.backend_id
    first = standins[first_pk]
    second_pk = next(pk for pk in standins if pk != first_pk)
    standins[second_pk].faults(generate_seconds=0.3)
    job = in_thread(task.pk)
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).provider_task_id, timeout=20,
             message="the provider's task id to be stored")
    abandoned = GenerationTask.objects.get(pk=task.pk).provider_task_id
    os.kill(first.proc.pid, how)
    gone = time.monotonic()
    job.join(30)
    assert not job.is_alive()
    task.refresh_from_db()
    assert task.status == "pending" and task.backend_id == second_pk, (task.status, task.backend_id)
    assert not ComfyBackend.objects.get(pk=first_pk).is_online  # no more work for it
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert time.monotonic() - gone < 2.0 + 20  # the grace period, a few polls and the new run (CI is slow)
    assert standins[second_pk].stats()["submissions"] == 1
    [moved, done] = task.runs.order_by("number")
    assert (moved.outcome, moved.ended_by, moved.backend_id) == ("moved", "fail_over", first_pk)
    assert abandoned in moved.error_message and "may still finish there and be billed" in moved.error_message
    assert (done.outcome, done.backend_id) == ("completed", second_pk)
    assert task.provider_task_id != abandoned


def test_with_no_other_backend_offering_the_model_it_keeps_polling_until_the_backend_returns(
        catalog, volc_standin, other_standin, make_user):
    backend = _backend("volc-a", volc_standin, [MODEL])
    _backend("volc-b", other_standin, ["jimeng_t2i_v40"])  # online, but not this model
    volc_standin.faults(generate_seconds=2)
    task = assigned(make_user)
    job = in_thread(task.pk)
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).provider_task_id, timeout=20,
             message="the provider's task id to be stored")
    os.kill(volc_standin.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(2.0 + 3)  # well past the grace period
        row = GenerationTask.objects.get(pk=task.pk)
        assert (row.status, row.backend_id) == ("processing", backend.pk)
        assert "could not be reached" in row.status_message
        # Marked offline while it does not answer (dispatch gives it nothing new meanwhile).
        assert not ComfyBackend.objects.get(pk=backend.pk).is_online
        assert job.is_alive()
    finally:
        os.kill(volc_standin.proc.pid, signal.SIGCONT)
    job.join(30)
    assert not job.is_alive()
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert volc_standin.stats()["submissions"] == 1
    assert runs(task) == [("volc-a", "completed", "completion", "")]
    assert ComfyBackend.objects.get(pk=backend.pk).is_online  # back with its next answer


# --- the backend cannot be reached before anything was sent ----------------------------------------------------------

def test_a_task_whose_backend_refuses_every_submit_goes_back_to_the_queue_and_runs_elsewhere(
        catalog, volc_standin, other_standin, make_user, settings):
    settings.EASEL_BACKEND_HANDBACK_SECONDS = 1.0
    standins = {_backend(name, standin, [MODEL]).pk: standin
                for name, standin in (("volc-a", volc_standin), ("volc-b", other_standin))}
    task = assigned(make_user)
    first_pk = task.backend_id
    second_pk = next(pk for pk in standins if pk != first_pk)
    standins[first_pk].proc.kill()  # gone before the submit: every try is refused outright
    standins[first_pk].proc.wait()
    task_run(task_id=task.pk)
    task.refresh_from_db()
    # Nothing reached VolcEngine, so nothing stays in the way of sending it anew elsewhere.
    assert task.status == "pending" and task.submitted_at is None and not task.provider_task_id
    assert task.backend_id == second_pk, task.backend_id
    assert not ComfyBackend.objects.get(pk=first_pk).is_online
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert standins[second_pk].stats()["submissions"] == 1
    assert [(b, o, e) for b, o, e, _code in runs(task)] == [
        ("volc-a", "moved", "hand_back"), ("volc-b", "completed", "completion")]
