"""A PostgreSQL connection cut under Easel (a restart, a failover, `pg_terminate_backend`).

Each test cuts a real connection with `pg_terminate_backend` from a connection of its own:
the test's own (the in-process test client, jobs run here) or a pump thread's. Skipped
on SQLite, which has no server to drop a connection.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from tests.conftest import ROOT, wait_for


@pytest.fixture
def pg(transactional_db):
    """A separate psycopg connection that cuts others (the test runs outside a
    transaction: a cut would lose the test's own)."""
    if connection.vendor != "postgresql":
        pytest.skip("connection cuts need a PostgreSQL server")
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    killer = psycopg.connect(**{k: v for k, v in params.items() if k in
                                ("dbname", "user", "password", "host", "port")}, autocommit=True)
    yield Cutter(killer)
    killer.close()


class Cutter:
    def __init__(self, killer):
        self.killer = killer

    def cut(self, pid: int) -> None:
        self.killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while self.killer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.02)

    def cut_mine(self) -> None:
        """Cut this thread's Django connection (opened first if it is not)."""
        connection.ensure_connection()
        self.cut(connection.connection.info.backend_pid)

    def others(self) -> list[int]:
        """Backends of the test database other than this thread's and the cutter's."""
        connection.ensure_connection()
        mine = connection.connection.info.backend_pid
        rows = self.killer.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> ALL(%s)",
            [connection.settings_dict["NAME"], [mine, self.killer.info.backend_pid]],
        ).fetchall()
        return [r[0] for r in rows]

    def cut_at(self, table: str):
        """A wrapper for `connection.execute_wrapper`: cuts the connection just before the
        first query on `table` (once), so that query meets a dead connection."""
        state = {"cut": 0}

        def wrapper(execute, sql, params, many, context):
            if not state["cut"] and f'"{table}"' in sql:
                state["cut"] += 1
                self.cut(context["connection"].connection.info.backend_pid)
            return execute(sql, params, many, context)

        return wrapper, state


_FINISHED = dict(prompt="a quiet harbour", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7,
                 sampler="euler", scheduler="normal", seed=42)


def _user_and_client(make_user, api_client_for):
    user = make_user()
    return user, api_client_for(user)


# --- web requests -------------------------------------------------------------------


def test_a_read_whose_connection_is_cut_is_answered_from_a_new_one(pg, make_user, api_client_for):
    from generation.models import GenerationTask

    user, client = _user_and_client(make_user, api_client_for)
    task = GenerationTask.objects.create(user=user, **_FINISHED)
    wrapper, state = pg.cut_at("generation_generationtask")
    with connection.execute_wrapper(wrapper):
        response = client.get(f"/api/v1/generation/status/{task.pk}")
    assert state["cut"] == 1
    assert response.status_code == 200, response.content
    assert response.json()["id"] == task.pk


def test_a_write_whose_connection_is_cut_is_a_503_with_retry_after(pg, catalog, make_user, api_client_for):
    from generation.models import GenerationTask

    _user, client = _user_and_client(make_user, api_client_for)
    wrapper, state = pg.cut_at("generation_generationtask")
    with connection.execute_wrapper(wrapper):
        response = client.post("/api/v1/generation/create-async",
                               {"prompt": "a quiet harbour", "model_name": "demo-sd15"}, format="json")
    assert state["cut"] == 1
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["fields"] == {} and error["message"]
    assert int(response["Retry-After"]) == error["retry_after"] > 0
    # The dead connection was closed: the client's retry is served on a fresh one.
    response = client.post("/api/v1/generation/create-async",
                           {"prompt": "a quiet harbour", "model_name": "demo-sd15"}, format="json")
    assert response.status_code in (201, 202), response.content
    assert GenerationTask.objects.count() == 1


def test_pages_answer_a_cut_with_easel_s_own_page_or_a_retried_read(pg, make_user, client, settings):
    settings.DEBUG = True  # the debug page must not be what a reader sees either
    user = make_user()
    client.force_login(user)
    wrapper, state = pg.cut_at("generation_generationtask")
    with connection.execute_wrapper(wrapper):
        response = client.get("/history/")
    assert state["cut"] == 1 and response.status_code == 200

    wrapper, state = pg.cut_at("generation_generationtask")
    with connection.execute_wrapper(wrapper):
        response = client.post("/history/delete/", {"ids": ["1"]}, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert state["cut"] == 1
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    page = response.content.decode()
    assert "easel.css" in page and "Traceback" not in page
    assert 'lang="zh-hans"' in page and "暂时" in page


def test_kept_connections_are_health_checked_so_an_idle_cut_costs_no_request(pg, catalog, make_user,
                                                                             api_client_for):
    """With DB_CONN_MAX_AGE (default: 60) connections outlive requests; one the server
    dropped while idle is found and replaced before the next request's first query."""
    env = {**os.environ, "DB_CONN_MAX_AGE": "60"}
    code = ("import django, json; django.setup(); from django.conf import settings; "
            "d = settings.DATABASES['default']; print(json.dumps([d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS']]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
                         capture_output=True, text=True, check=True).stdout
    max_age, health_checks = json.loads(out.strip().splitlines()[-1])
    assert max_age == 60 and health_checks is True

    connection.settings_dict.update(CONN_MAX_AGE=max_age, CONN_HEALTH_CHECKS=health_checks)
    try:
        connection.close()
        _user, client = _user_and_client(make_user, api_client_for)
        assert client.get("/api/v1/generation/history").status_code == 200  # the connection is kept
        pg.cut_mine()
        # What Django's handler does as a request starts (the test client leaves it out):
        # the kept connection is due for its health check.
        close_old_connections()
        response = client.post("/api/v1/generation/create-async",
                               {"prompt": "a quiet harbour", "model_name": "demo-sd15"}, format="json")
        assert response.status_code in (201, 202), response.content
    finally:
        connection.settings_dict.update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
        connection.close()


# --- the webhook of a finished task -------------------------------------------------


def test_a_finished_task_s_webhook_is_made_once_when_its_job_s_connection_is_cut(pg, make_user, monkeypatch):
    from generation import jobs
    from generation.models import GenerationTask, TaskStatus, WebhookDelivery
    from generation.webhooks.services import webhooks_sweep

    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)
    user = make_user()
    task = GenerationTask.objects.create(
        user=user, status=TaskStatus.COMPLETED, **_FINISHED,
        completed_at=timezone.now() - timedelta(minutes=5), callback_url="https://hooks.example.com/easel",
    )
    pg.cut_mine()  # the worker's kept connection dies before the job runs
    jobs.generation_finished(task.pk)
    assert list(WebhookDelivery.objects.values_list("task_id", flat=True)) == [task.pk]
    # The tick's sweep finds nothing missing: no second webhook.
    assert webhooks_sweep() == 0
    assert WebhookDelivery.objects.count() == 1


def test_the_sweep_reads_a_webhook_as_made_whatever_the_clocks_say(db, make_user, monkeypatch):
    """A delivery stored by a host whose clock runs behind the one that finished the task
    is that task's webhook: the sweep does not pick the task again at every tick."""
    from generation.models import GenerationTask, TaskStatus, WebhookDelivery
    from generation.webhooks.services import webhook_enqueue_for_task, webhooks_sweep

    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)
    task = GenerationTask.objects.create(
        user=make_user(), status=TaskStatus.COMPLETED, **_FINISHED,
        completed_at=timezone.now() - timedelta(minutes=5), callback_url="https://hooks.example.com/easel",
    )
    delivery = webhook_enqueue_for_task(task_id=task.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=task.completed_at - timedelta(seconds=2))
    assert webhooks_sweep() == 0
    assert WebhookDelivery.objects.count() == 1


# --- the pump -----------------------------------------------------------------------


def test_a_pump_whose_connections_are_cut_recovers_and_its_run_finishes(pg, engine_catalog, make_user, settings,
                                                                        monkeypatch):
    """Cut every connection of a pump mid-run (its loop's and its runner's): the pump goes
    on beating, the runner lets go of the task instead of failing it, and the pump
    follows the prompt again, which finishes, submitted once."""
    from generation.fleet.pump import PumpRun
    from generation.models import GenerationTask, Pump, TaskStatus
    from generation.services import generation_create

    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)
    engine = engine_catalog["engine"]
    engine.faults(step_delay=0.4)
    user = make_user()
    task = generation_create(user=user, prompt="a quiet harbour", model_name="demo-sd15", steps=12)
    # (A create leaves the pass to a pump when one is alive, as the session's may be.)
    from generation.fleet.dispatch import dispatch

    dispatch(probe=False)
    assert GenerationTask.objects.get(pk=task.pk).backend_id is not None
    pump = Pump.objects.create(heartbeat_at=timezone.now())
    run = PumpRun(pump.pk, seconds=90, extra=True)
    def follow():
        try:
            run.run()
        finally:
            connection.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        wait_for(lambda: GenerationTask.objects.filter(pk=task.pk, status=TaskStatus.PROCESSING,
                                                      progress_value__gte=2).exists(),
                 timeout=30, message="the task runs")
        victims = pg.others()
        assert len(victims) >= 2  # the pump's loop and its runner
        cut_at = timezone.now()
        for pid in victims:
            pg.cut(pid)
        wait_for(lambda: Pump.objects.filter(pk=pump.pk, heartbeat_at__gt=cut_at).exists(), timeout=15,
                 message="the pump beats again")
        assert thread.is_alive()
        wait_for(lambda: GenerationTask.objects.filter(pk=task.pk, status=TaskStatus.COMPLETED).exists(),
                 timeout=40, message="the task completes")
        assert list(engine.stats()["submissions"].values()) == [1]
    finally:
        run.stop()
        thread.join(40)
