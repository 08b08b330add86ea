"""The run machinery at its edges: a lost lease, a submit that went unanswered, a
timeout that counts from the first start.

The job runs in this process (no qcluster, so nothing else takes the task) against
demo engines on real ports, which speak ComfyUI's protocol and keep each prompt's
history: what the engine ran is what the assertions read.
"""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
from django.db import connections
from django.utils import timezone

from generation.fleet.dispatch import dispatch
from generation.fleet.runner import task_run
from generation.models import GenerationTask
from generation.services import generation_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def engines(transactional_db, make_engine, settings, no_cluster):
    """Two demo engines with the catalog synced; no qcluster runs meanwhile (the job under
    test runs here, and nothing else may take its task)."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, WorkflowTemplate
    from models_catalog.services import backend_ensure, catalog_sync

    ensure_builtin_templates(WorkflowTemplate)
    made = [make_engine(), make_engine()]
    backends = [backend_ensure(name=f"e{i}", base_url=e.url) for i, e in enumerate(made)]
    catalog_sync(backends=backends)
    Checkpoint.objects.update(default_steps=6, default_width=64, default_height=64)
    settings.EASEL_BACKEND_RETRY_MAX_DELAY = 1
    return {backend.pk: engine for engine, backend in zip(made, backends)}


def history(engine, prompt_id) -> dict:
    return requests.get(f"{engine.url}/history/{prompt_id}", timeout=5).json().get(str(prompt_id), {})


def assigned_task(make_user) -> GenerationTask:
    user = make_user(max_concurrent_tasks=5)
    task = generation_create(user=user, prompt="a lighthouse", model_name="demo-sd15")
    dispatch(probe=False)
    task.refresh_from_db()
    assert task.backend_id is not None
    return task


def test_a_job_that_lost_its_lease_leaves_the_prompt_running(engines, make_user):
    """A job that stalls past its lease (a slow call, a database pause) and wakes up to
    find another owner must not interrupt the prompt its successor follows."""
    task = assigned_task(make_user)
    engine = engines[task.backend_id]
    engine.faults(step_delay=0.4)

    def run():
        try:
            task_run(task_id=task.pk)
        finally:
            connections.close_all()

    job = threading.Thread(target=run)
    job.start()
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).progress_value >= 1, timeout=30,
             message="the prompt to be sampling")
    # Another job takes the task over (as after this one stalled past its lease).
    GenerationTask.objects.filter(pk=task.pk).update(
        lease_owner="successor", lease_until=timezone.now() + timedelta(seconds=60))
    job.join(30)
    assert not job.is_alive()
    entry = wait_for(lambda: history(engine, task.prompt_id) or None, timeout=30, message="the prompt to end")
    # The prompt ran to its end on the engine: nobody interrupted it.
    assert entry["status"]["status_str"] == "success", entry["status"]
    task.refresh_from_db()
    assert task.status == "processing" and task.lease_owner == "successor"


def test_a_cancelled_task_still_stops_its_prompt(engines, make_user):
    from generation.services import generation_cancel

    task = assigned_task(make_user)
    engine = engines[task.backend_id]
    engine.faults(step_delay=0.4)
    job = threading.Thread(target=lambda: (task_run(task_id=task.pk), connections.close_all()))
    job.start()
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).progress_value >= 1, timeout=30,
             message="the prompt to be sampling")
    generation_cancel(task=GenerationTask.objects.get(pk=task.pk))
    job.join(30)
    entry = wait_for(lambda: history(engine, task.prompt_id) or None, timeout=30, message="the prompt to end")
    assert entry["status"]["status_str"] != "success"


def test_a_submit_left_unanswered_counts_as_sent(engines, make_user, settings):
    """ComfyUI queued the prompt but its answer never came (a timeout): the task must not
    go to another backend under the same prompt_id (two GPUs would run it). The job asks
    the backend again and follows the prompt there."""
    settings.COMFYUI_HTTP_TIMEOUT = 1.0
    settings.EASEL_BACKEND_HANDBACK_SECONDS = 0  # would hand an unsent task back at once
    settings.EASEL_FAILOVER_GRACE_SECONDS = 60
    task = assigned_task(make_user)
    engine = engines[task.backend_id]
    other = next(e for pk, e in engines.items() if pk != task.backend_id)
    engine.faults(hang_next_submit=3, step_delay=0.05)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    if task.status != "completed":
        # Handed back: let a second job run it wherever dispatch sends it (the old way).
        dispatch(probe=False)
        task.refresh_from_db()
        task_run(task_id=task.pk)
        task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert history(engine, task.prompt_id)["status"]["status_str"] == "success"
    assert history(other, task.prompt_id) == {}  # never run twice
    assert task.images.count() == 1


def test_the_execution_timeout_counts_from_the_first_start(engines, make_user):
    """A task that first started long ago (its backend dropped and came back since) is
    out of time now, even though this connection has just begun."""
    from models_catalog.models import WorkflowTemplate

    WorkflowTemplate.objects.filter(slug="txt2img-basic").update(execution_timeout=5)
    task = assigned_task(make_user)
    engine = engines[task.backend_id]
    engine.faults(step_delay=0.3)  # about 2 s: well inside 5 s from now
    GenerationTask.objects.filter(pk=task.pk).update(started_at=timezone.now() - timedelta(seconds=10))
    began = time.monotonic()
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "failed" and task.error_code == "timeout", (task.status, task.error_message)
    assert time.monotonic() - began < 30


def test_of_two_pumps_started_at_once_the_older_stays(no_cluster, caplog, monkeypatch):
    """Each worker of a starting cluster may queue a pump; when both start at the same
    moment, exactly one steps aside (the newer): before, each saw two started and both
    ended, leaving none until the next tick."""
    import logging

    from generation.fleet.pump import PumpRun
    from generation.models import Pump

    monkeypatch.setattr("generation.fleet.pump.pumps_ensure", lambda: 0)  # no successor queued here
    older, newer = (Pump.objects.create(heartbeat_at=timezone.now()) for _ in range(2))
    Pump.objects.filter(pk=newer.pk).update(started_at=timezone.now())  # it started a moment ago
    with caplog.at_level(logging.INFO, logger="generation.fleet.pump"):
        PumpRun(older.pk, seconds=0.2).run()
        assert f"pump {older.pk} started" in caplog.text
        Pump.objects.filter(pk=newer.pk).update(started_at=None)  # the newer one starts now
        Pump.objects.create(pk=older.pk, heartbeat_at=timezone.now(), started_at=timezone.now())
        PumpRun(newer.pk, seconds=0.2).run()
    assert f"pump {newer.pk} not needed" in caplog.text


def test_a_pump_run_by_hand_is_extra_never_instead_of_the_cluster_s(no_cluster, caplog, monkeypatch):
    """`manage.py pump` beside a cluster: the cluster's own pump neither steps aside for
    it nor goes unqueued because of it."""
    import logging

    from generation.fleet import pump as pump_module
    from generation.fleet.pump import PumpRun, kept_alive
    from generation.models import Pump

    queued = []
    monkeypatch.setattr(pump_module, "enqueue", lambda *args, **kwargs: queued.append(args))
    by_hand = Pump.objects.create(heartbeat_at=timezone.now(), started_at=timezone.now(), extra=True)
    assert not kept_alive().exists()
    assert pump_module.pumps_ensure() == 1 and len(queued) == 1  # the cluster's own, queued anyway
    own = kept_alive().get()
    assert own.pk > by_hand.pk
    monkeypatch.setattr(pump_module, "pumps_ensure", lambda: 0)
    with caplog.at_level(logging.INFO, logger="generation.fleet.pump"):
        PumpRun(own.pk, seconds=0.2).run()
    assert f"pump {own.pk} started" in caplog.text  # not "not needed": the older one is extra


def test_a_pump_looks_for_tasks_to_claim_after_a_pass_that_assigned_some_and_once_a_poll(no_cluster, monkeypatch):
    """Every ending wakes the pump's loop, but its freed slot is filled by the next pass,
    a spacing later: a look for claimable tasks at each wake found nothing (a read per
    task ended, a tenth of the pump's CPU)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.fleet import pump as pump_module
    from generation.models import Pump

    def looks() -> int:
        with CaptureQueriesContext(connection) as queries:
            run._claim()
        return len(queries)

    pump = Pump.objects.create(heartbeat_at=timezone.now(), started_at=timezone.now())
    run = pump_module.PumpRun(pump.pk, seconds=1)
    run.holdings.held = {1}  # a backend it drives (none of its tasks waits)
    try:
        assert looks() == 1  # the first look
        assert looks() == 0 and looks() == 0  # woken by endings: no pass since, nothing to look for
        monkeypatch.setattr(pump_module, "dispatch", lambda **kwargs: [41])  # a pass that assigned a task
        run.dispatch_due.set()
        run._dispatch_due()
        assert looks() == 1 and looks() == 0
        run.claimed_at -= pump_module.POLL_SECONDS  # a poll later: tasks others may have assigned
        assert looks() == 1
    finally:
        run.pool.shutdown()
        run.prober.shutdown()
