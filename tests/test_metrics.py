"""/metrics as Prometheus reads it: off by default, protected, and numbers that move with the studio.

Every answer is parsed with prometheus_client's own parser, as a scraper would.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from generation import transitions
from generation.models import GenerationTask, TaskRun, TaskStatus, WebhookDelivery
from generation.ops import metrics as metrics_module, rollup
from generation.task_text import text
from models_catalog.models import ComfyBackend
from tests.conftest import ROOT, api_create, tasks_finished, wait_for
from tests.test_dashboard import task

URL = "/metrics"
TOKEN = "s3cret-metrics-token"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
DASHBOARD = ROOT / "deploy" / "grafana" / "easel-dashboard.json"


@pytest.fixture(autouse=True)
def _fresh_rolled_counts():
    # The rolled part is kept per process by the rollup's mark; tests make their own.
    metrics_module.rolled_counts.clear()
    metrics_module.ended_deliveries.clear()
    yield
    metrics_module.rolled_counts.clear()
    metrics_module.ended_deliveries.clear()


@pytest.fixture
def token(settings):
    settings.EASEL_METRICS_TOKEN = TOKEN
    settings.EASEL_METRICS_ALLOW = []
    return TOKEN


def scrape(client, **extra) -> dict:
    """name → {label tuple → value}, for every sample of the answer."""
    response = client.get(URL, **{**AUTH, **extra})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, default: float = 0.0, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), default)


# --- protection ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_off_by_default_the_path_does_not_exist(client, settings):
    settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW = "", []
    assert client.get(URL).status_code == 404
    assert client.get(URL, **AUTH).status_code == 404


@pytest.mark.django_db
def test_the_token_is_required_and_checked(client, token):
    missing = client.get(URL)
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    ok = client.get(URL, **AUTH)
    assert ok.status_code == 200 and "no-cache" in ok["Cache-Control"]
    assert "easel_tasks_waiting" in ok.content.decode()
    assert client.post(URL, **AUTH).status_code == 405


@pytest.mark.django_db
def test_the_allow_list_admits_only_its_addresses(client, settings):
    settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW = "", ["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"]
    assert client.get(URL, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get(URL, REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get(URL, REMOTE_ADDR="2001:db8::1").status_code == 200
    assert client.get(URL, REMOTE_ADDR="10.2.0.1").status_code == 403
    # Without trusted proxies a client's own X-Forwarded-For counts for nothing.
    assert client.get(URL, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 403


@pytest.mark.django_db
def test_the_allow_list_reads_the_client_behind_trusted_proxies(client, settings):
    settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW = "", ["10.1.0.0/16"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert client.get(URL, REMOTE_ADDR="172.17.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3").status_code == 200
    # The proxy appends the address it saw: a forged first entry does not help.
    assert client.get(URL, REMOTE_ADDR="172.17.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3, 203.0.113.9").status_code == 403


@pytest.mark.django_db
def test_with_both_set_both_must_pass(client, settings):
    settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW = TOKEN, ["127.0.0.1"]
    assert client.get(URL, REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get(URL, REMOTE_ADDR="10.0.0.1", **AUTH).status_code == 403
    assert client.get(URL, REMOTE_ADDR="127.0.0.1", **AUTH).status_code == 200


def test_a_bad_allow_list_entry_stops_the_start(monkeypatch):
    import subprocess
    import sys

    env = {"EASEL_METRICS_ALLOW": "10.0.0.0/8,not-an-address", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
                            env={**__import__("os").environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not-an-address" in result.stderr


# --- the numbers, on rows staged by hand ----------------------------------------------------------------------------


@pytest.fixture
def studio(make_user, token):
    gpu = ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188", is_online=True, max_in_flight=3)
    gpu2 = ComfyBackend.objects.create(name="gpu2", base_url="http://10.0.0.2:8188", is_online=False)
    ComfyBackend.objects.create(name="off", base_url="http://10.0.0.3:8188", enabled=False)
    alice, bob = make_user("alice"), make_user("bob")
    return {"gpu": gpu, "gpu2": gpu2, "alice": alice, "bob": bob}


def failed(user, code, **kwargs):
    row = task(user, TaskStatus.FAILED, **kwargs)
    GenerationTask.objects.filter(pk=row.pk).update(error_code=code)
    return row


@pytest.mark.django_db
def test_queue_and_backends(client, studio):
    gpu, alice, bob = studio["gpu"], studio["alice"], studio["bob"]
    for _ in range(3):
        task(alice, TaskStatus.PENDING, model="m1", age=timedelta(minutes=4))
    recent = timedelta(minutes=1)
    task(bob, TaskStatus.PENDING, model="m2", age=recent)
    task(bob, TaskStatus.PENDING, model="m2", backend=gpu, age=recent)  # assigned, not started
    task(bob, TaskStatus.PROCESSING, backend=gpu, age=recent)
    task(alice, TaskStatus.PROCESSING, backend=gpu, age=recent)
    s = scrape(client)
    assert value(s, "easel_tasks_waiting", model="m1") == 3
    assert value(s, "easel_tasks_waiting", model="m2") == 1
    assert value(s, "easel_tasks_assigned", backend="gpu") == 1
    assert value(s, "easel_tasks_running", backend="gpu") == 2
    assert 4 * 60 - 5 < value(s, "easel_tasks_oldest_waiting_seconds") < 4 * 60 + 60
    assert value(s, "easel_backend_up", backend="gpu") == 1
    assert value(s, "easel_backend_up", default=-1, backend="gpu2") == 0
    assert value(s, "easel_backend_capacity", backend="gpu") == 3
    assert ("backend", "off") not in {label for labels in s["easel_backend_up"] for label in labels}


@pytest.mark.django_db
def test_finished_counters_by_reason_survive_the_rollup_and_deletes(client, studio):
    gpu, alice, bob = studio["gpu"], studio["alice"], studio["bob"]
    for seconds in (2, 4):
        task(alice, TaskStatus.COMPLETED, backend=gpu, seconds=seconds, age=timedelta(hours=3), batch_size=2)
    task(alice, TaskStatus.COMPLETED, backend=gpu, age=timedelta(minutes=2))
    failed(bob, "execution_error", backend=gpu, age=timedelta(hours=3))
    failed(bob, "timeout", backend=gpu, age=timedelta(minutes=2))
    task(bob, TaskStatus.CANCELLED, age=timedelta(minutes=2))

    def expected(s):
        return (value(s, "easel_tasks_finished_total", status="completed", reason="none", model="m1", backend="gpu"),
                value(s, "easel_tasks_finished_total", status="failed", reason="execution_error", model="m1",
                      backend="gpu"),
                value(s, "easel_tasks_finished_total", status="failed", reason="timeout", model="m1", backend="gpu"),
                value(s, "easel_tasks_finished_total", status="cancelled", reason="none", model="m1",
                      backend="none"),
                value(s, "easel_images_generated_total", model="m1", backend="gpu"))

    live = expected(scrape(client))
    assert live == (3, 1, 1, 1, 5)
    # The tick rolls the hours that are over: the same totals, partly from the rollup.
    rollup.roll_up(now=timezone.now())
    assert rollup.mark(rollup.HOURS) is not None
    assert expected(scrape(client)) == live
    # Deleting tasks in rolled-up hours leaves the counters alone (the rollup keeps them).
    GenerationTask.objects.filter(completed_at__lt=rollup.mark(rollup.HOURS)).delete()
    assert expected(scrape(client)) == live
    # A new end moves them.
    failed(alice, "timeout", backend=gpu, age=timedelta(minutes=1))
    assert expected(scrape(client))[2] == 2


@pytest.mark.django_db
def test_failovers_are_counted_from_the_moved_attempts(client, studio, catalog, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)
    gpu = studio["gpu"]
    row = GenerationTask.objects.create(
        user=studio["alice"], prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1)
    before = scrape(client)
    assert value(before, "easel_task_failovers_total", backend="gpu", kind="fail_over") == 0

    assert transitions.assign(row.pk, backend_id=gpu.pk) and transitions.claim(row.pk, owner="a")
    assert transitions.hand_back(GenerationTask.objects.get(pk=row.pk), owner="a", reason=text("unreachable"))
    assert transitions.assign(row.pk, backend_id=gpu.pk) and transitions.claim(row.pk, owner="b")
    moving = GenerationTask.objects.get(pk=row.pk)
    assert transitions.start(moving, owner="b")
    assert transitions.fail_over(moving, owner="b", reason=text("gone"))
    after = scrape(client)
    assert value(after, "easel_task_failovers_total", backend="gpu", kind="fail_over") == 1
    assert value(after, "easel_task_failovers_total", backend="gpu", kind="hand_back") == 1
    assert TaskRun.objects.filter(task=row).count() == 2


@pytest.mark.django_db
def test_webhook_deliveries_by_state_counted_in_steps(client, studio):
    def delivery(state, *, age=timedelta(minutes=10)):
        row = WebhookDelivery.objects.create(user=studio["alice"], event="task.completed",
                                             url="https://example.com/h", message_id=f"msg_{uuid.uuid4().hex}",
                                             payload={}, state=state)
        WebhookDelivery.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
        return row

    def counts(s):
        return (value(s, "easel_webhook_deliveries_total", state="delivered"),
                value(s, "easel_webhook_deliveries_total", state="failed"),
                value(s, "easel_webhook_deliveries_pending"))

    for state in ["delivered"] * 3 + ["failed"] * 2:
        delivery(state)
    waiting = delivery("pending")
    delivery("delivered")  # above the pending one: counted live until that one settles
    assert counts(scrape(client)) == (4, 2, 1)
    assert counts(scrape(client)) == (4, 2, 1)  # the settled part is not counted twice
    # The pending one ends; new ones arrive (one just now, not settled yet).
    WebhookDelivery.objects.filter(pk=waiting.pk).update(state="failed")
    delivery("delivered")
    delivery("pending", age=timedelta(seconds=1))
    assert counts(scrape(client)) == (5, 3, 1)
    assert counts(scrape(client)) == (5, 3, 1)
    assert metrics_module.ended_deliveries._floor > waiting.pk
    # A fresh process (another worker) counts the same.
    metrics_module.ended_deliveries.clear()
    assert counts(scrape(client)) == (5, 3, 1)


@pytest.mark.django_db
def test_duration_histograms_cover_the_recent_window(client, studio):
    gpu, alice = studio["gpu"], studio["alice"]
    for seconds in (3, 3, 8, 40):
        task(alice, TaskStatus.COMPLETED, backend=gpu, seconds=seconds, age=timedelta(minutes=3))
    failed(alice, "execution_error", backend=gpu, seconds=1, age=timedelta(minutes=3))
    task(alice, TaskStatus.COMPLETED, backend=gpu, seconds=500, age=timedelta(hours=2))  # outside the window
    s = scrape(client)
    labels = {"model": "m1", "backend": "gpu"}
    assert value(s, "easel_task_run_seconds_bucket", le="2.0", **labels) == 0
    assert value(s, "easel_task_run_seconds_bucket", le="5.0", **labels) == 2
    assert value(s, "easel_task_run_seconds_bucket", le="10.0", **labels) == 3
    assert value(s, "easel_task_run_seconds_bucket", le="+Inf", **labels) == 4  # completed only
    assert value(s, "easel_task_run_seconds_gcount", **labels) == 4
    assert value(s, "easel_task_run_seconds_gsum", **labels) == pytest.approx(54, abs=0.01)
    # Wait: created → started is 1 s for each staged task (queued_at is at its creation).
    assert value(s, "easel_task_wait_seconds_gcount", **labels) == 5


@pytest.mark.django_db
def test_images_today_shows_the_busiest_users_only(client, studio, make_user, monkeypatch):
    monkeypatch.setattr(metrics_module, "TOP_USERS", 2)
    gpu = studio["gpu"]
    now = timezone.localtime()
    age = timedelta(minutes=min(30, max(0, now.hour * 60 + now.minute - 2)))  # today, in the studio's zone
    for name, n in (("alice", 3), ("bob", 2), ("carol", 1)):
        user = studio.get(name) or make_user(name)
        for _ in range(n):
            task(user, TaskStatus.COMPLETED, backend=gpu, age=age, batch_size=2)
    task(studio["alice"], TaskStatus.COMPLETED, backend=gpu, age=timedelta(days=2))  # not today
    s = scrape(client)
    assert s["easel_user_images_today"] == {(("user", "alice"),): 6, (("user", "bob"),): 4}
    assert value(s, "easel_images_today") == 12


@pytest.mark.django_db
def test_a_scrape_costs_the_same_queries_with_ten_times_the_tasks(client, studio, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            scrape(client)
        return len(seen)

    def stage(n):
        for i in range(n):
            task(studio["alice"], TaskStatus.COMPLETED, backend=studio["gpu"], model=f"m{i % 3}",
                 age=timedelta(minutes=5))
            task(studio["bob"], TaskStatus.PENDING, model=f"m{i % 3}")

    stage(3)
    few = queries()
    stage(30)
    assert queries() == few
    assert few <= 20


# --- real work: the demo engine and a qcluster --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_values_move_when_tasks_run(engine_catalog, qcluster, client, make_user, api_client_for, token):
    api = api_client_for(make_user("painter"))
    before = scrape(client)
    labels = {"status": "completed", "reason": "none", "model": "demo-sd15", "backend": "demo"}
    assert value(before, "easel_tasks_finished_total", **labels) == 0
    assert value(before, "easel_backend_up", backend="demo") == 1
    wait_for(lambda: value(scrape(client), "easel_cluster_up") == 1, message="a cluster heartbeat")

    ids = api_create(api, 3)
    rows = tasks_finished(ids)
    assert {r.status for r in rows.values()} == {"completed"}
    after = scrape(client)
    assert value(after, "easel_tasks_finished_total", **labels) == 3
    assert value(after, "easel_images_generated_total", model="demo-sd15", backend="demo") == 3
    assert value(after, "easel_task_run_seconds_gcount", model="demo-sd15", backend="demo") == 3
    assert value(after, "easel_task_wait_seconds_bucket", model="demo-sd15", backend="demo", le="+Inf") == 3
    assert value(after, "easel_images_today") == 3
    assert value(after, "easel_user_images_today", user="painter") == 3
    assert value(after, "easel_tasks_running", default=0, backend="demo") == 0
    assert value(after, "easel_pumps_alive") >= 1 and value(after, "easel_workers") >= 1


# --- the Grafana dashboard asks only for what /metrics says ---------------------------------------------------------


def _exposed_names(client) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(client.get(URL, **AUTH).content.decode()):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        names.add(family.name)
    return names


@pytest.mark.django_db
def test_the_grafana_dashboard_names_only_exposed_metrics(client, token, make_user):
    # One task that just ended, so the window's histograms have series (and their
    # _gcount / _gsum, which the text format exposes only with samples).
    gpu = ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188", is_online=True)
    task(make_user("alice"), TaskStatus.COMPLETED, backend=gpu, age=timedelta(minutes=2))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\beasel_[a-z_]+", expr)}
    exposed = _exposed_names(client)
    assert used and used <= exposed, used - exposed
    # The panels the operators asked for are there.
    for wanted in ("easel_tasks_waiting", "easel_tasks_running", "easel_backend_up", "easel_task_wait_seconds_bucket",
                   "easel_task_run_seconds_bucket", "easel_tasks_finished_total", "easel_webhook_deliveries_total"):
        assert wanted in used, wanted
    assert any("histogram_quantile" in e for e in exprs)
    datasources = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    provisioned = (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert datasources == {"easel-prometheus"} and "uid: easel-prometheus" in provisioned


# --- a real Prometheus scrapes it with deploy/prometheus.yml -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_prometheus_scrapes_the_queue_and_backends(live_server, settings, tmp_path, make_user, no_cluster):
    """The scrape example as Prometheus itself runs it: bearer token from the file, the
    queue and backend series in its database, and a wrong token's scrape marked down.
    (No cluster: a live pump would give the staged waiting tasks to the backend.)"""
    import shutil
    import subprocess

    import requests
    import yaml

    from tests.conftest import free_port

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary here (Debian: apt-get install prometheus)")
    settings.EASEL_METRICS_TOKEN, settings.EASEL_METRICS_ALLOW = TOKEN, []
    ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188", is_online=True)
    user = make_user("alice")
    for _ in range(2):
        task(user, TaskStatus.PENDING, model="m1", age=timedelta(minutes=1))

    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    [job] = config["scrape_configs"]
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "wrong").write_text("not-the-token")
    target = live_server.url.split("://", 1)[1]
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    job["static_configs"] = [{"targets": [target]}]
    wrong = {**job, "job_name": "easel-wrong-token",
             "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "wrong")}}
    config["scrape_configs"] = [job, wrong]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(expr: str) -> dict:
        try:
            answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in answer.get("data", {}).get("result", [])}

    try:
        waiting = wait_for(lambda: query('easel_tasks_waiting{model="m1"}'), timeout=60, message="a scrape")
        assert list(waiting.values()) == [2]
        assert list(query('easel_backend_up{backend="gpu"}').values()) == [1]
        assert list(query('up{job="easel"}').values()) == [1]
        assert wait_for(lambda: query('up{job="easel-wrong-token"}'), timeout=30, message="the wrong token's scrape")
        assert list(query('up{job="easel-wrong-token"}').values()) == [0]
    finally:
        proc.terminate()
        proc.wait(10)
