"""The staff dashboard: who may open it, its numbers on a known data set, the CSV export."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.urls import include, path
from django.utils import timezone

from config.urls import urlpatterns as site_urlpatterns
from generation.models import GeneratedImage, GenerationTask, TaskStatus
from generation.ops import stats
from models_catalog.models import ComfyBackend

# The project's URLs with the dashboard's in front, as config/urls.py includes them.
urlpatterns = [path("admin/", include("generation.ops.admin_urls")), *site_urlpatterns]
pytestmark = pytest.mark.urls(__name__)

URL = "/admin/dashboard/"


def task(user, status, *, model="m1", backend=None, age=timedelta(hours=1), seconds=None, batch_size=1):
    row = GenerationTask.objects.create(
        user=user, prompt="p", model_name=model, width=64, height=64, steps=4, cfg=7.0, sampler="euler",
        scheduler="normal", seed=1, status=status, backend=backend, batch_size=batch_size,
    )
    now = timezone.now()
    created = now - age
    values = {"created_at": created}
    if status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        started = created + timedelta(seconds=1)
        values.update(started_at=started, completed_at=started + timedelta(seconds=seconds or 1))
    elif status == TaskStatus.PROCESSING:
        values.update(started_at=created + timedelta(seconds=1))
    GenerationTask.objects.filter(pk=row.pk).update(**values)
    row.refresh_from_db()
    return row


def image(row, index, size):
    return GeneratedImage.objects.create(task=row, index=index, file=f"results/x{row.pk}-{index}.png", width=64,
                                         height=64, seed=1, size_bytes=size)


@pytest.fixture
def data(make_user):
    gpu = ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188", is_online=True)
    gpu2 = ComfyBackend.objects.create(name="gpu2", base_url="http://10.0.0.2:8188")
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    done = [task(alice, TaskStatus.COMPLETED, backend=gpu, seconds=s) for s in (2, 4, 6)]
    task(alice, TaskStatus.FAILED, backend=gpu, seconds=1)
    task(alice, TaskStatus.CANCELLED, age=timedelta(days=1))
    task(bob, TaskStatus.COMPLETED, model="m2", backend=gpu2, seconds=10, age=timedelta(days=2), batch_size=2)
    task(bob, TaskStatus.PENDING, age=timedelta(minutes=5))
    task(bob, TaskStatus.PROCESSING, backend=gpu, age=timedelta(minutes=1))
    task(carol, TaskStatus.COMPLETED, model="m2", backend=gpu2, seconds=3, age=timedelta(days=10))
    for i, size in enumerate((100, 200, 300)):
        image(done[i], 0, size)
    return {"gpu": gpu, "gpu2": gpu2, "alice": alice, "bob": bob}


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


def test_anonymous_and_non_staff_go_to_the_admin_login(client, make_user):
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(make_user("plain"))
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_studio_operator_opens_the_dashboard(client, make_user, operator_group):
    operator = make_user("op", is_staff=True)
    operator.groups.add(operator_group)
    client.force_login(operator)
    assert client.get(URL).status_code == 200


def test_admin_index_links_to_the_dashboard(staff_client):
    assert f'href="{URL}"' in staff_client.get("/admin/").content.decode()


def test_numbers_on_a_known_data_set(data):
    numbers = stats.dashboard_numbers(days=7)
    totals = numbers["totals"]
    assert (totals["completed"], totals["failed"], totals["cancelled"]) == (4, 1, 1)
    assert totals["success_rate"] == pytest.approx(0.8)
    assert sum(r["completed"] for r in numbers["per_day"]) == 4
    assert sum(r["cancelled"] for r in numbers["per_day"]) == 1
    assert len(numbers["per_day"]) in (8, 9)  # every day of the period, gaps filled
    assert sum(r["completed"] for r in numbers["per_hour"]) == 4

    durations = numbers["durations"]
    assert durations["sampled"] == 4
    m1 = next(r for r in durations["by_model"] if r["name"] == "m1")
    assert (m1["count"], m1["p50"], m1["p95"]) == (3, pytest.approx(4.0), pytest.approx(5.8))
    by_backend = {r["name"]: r for r in durations["by_backend"]}
    assert by_backend["gpu2"]["p50"] == pytest.approx(10.0)

    queue = numbers["queue"]
    assert (queue["pending"], queue["processing"]) == (1, 1)
    assert 290 <= queue["oldest_pending_seconds"] <= 330

    assert numbers["images"] == {"count": 3, "bytes": 600, "period_count": 3, "period_bytes": 600}
    users = [(r["username"], r["tasks"], r["images"], r["failed"]) for r in numbers["top_users"]]
    assert users == [("alice", 5, 3, 1), ("bob", 3, 2, 0)]
    models = [(r["model_name"], r["tasks"], r["completed"]) for r in numbers["top_models"]]
    assert models == [("m1", 7, 3), ("m2", 1, 1)]

    backends = {r["name"]: r for r in numbers["backends"]}
    # gpu: 2 + 4 + 6 + 1 s finished, plus the task running for about a minute.
    assert 13 + 55 <= backends["gpu"]["busy_seconds"] <= 13 + 65
    assert backends["gpu2"]["busy_seconds"] == pytest.approx(10.0)
    assert backends["gpu2"]["utilisation"] == pytest.approx(10.0 / numbers["period"].seconds)


def test_a_longer_period_takes_in_older_tasks(data):
    assert stats.outcome_totals(stats.activity(period=stats.period_for(days=30)))["completed"] == 5


def test_dashboard_page_renders_numbers_charts_workers_and_doctor(staff_client, data):
    response = staff_client.get(URL + "?days=7")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="stat-completed">4<' in body
    assert 'id="stat-success">80.0' in body
    assert 'id="stat-pending">1<' in body
    assert "<svg" in body and 'class="completed"' in body and 'class="failed"' in body
    assert "/admin/django_q/ormq/" in body and "/admin/django_q/failure/" in body
    assert "/admin/django_q/success/" in body and "/admin/django_q/schedule/" in body
    assert 'id="doctor"' in body and "migrations" in body
    assert "no qcluster heartbeat" in body


def test_period_is_clamped_and_bad_input_falls_back(staff_client, data):
    assert staff_client.get(URL + "?days=nope").context["days"] == 7
    assert staff_client.get(URL + "?days=100000").context["days"] == 365
    assert staff_client.get(URL + "?days=0").context["days"] == 1


def test_csv_export_has_the_same_numbers(staff_client, data):
    response = staff_client.get(URL + "?days=7&format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["section", "key", "metric", "value"]
    table = {(r[0], r[1], r[2]): r[3] for r in rows[1:]}
    assert table[("totals", "", "completed")] == "4"
    assert table[("totals", "", "success_rate")] == "0.8"
    assert table[("queue", "", "pending")] == "1"
    assert table[("images", "", "bytes")] == "600"
    assert table[("top_users", "alice", "tasks")] == "5"
    assert table[("durations_by_model", "m1", "p50")] == "4.0"
    assert sum(int(r[3]) for r in rows if r[0] == "per_day" and r[2] == "completed") == 4
    assert ("doctor", "migrations", "ok") in {(r[0], r[1], r[2]) for r in rows}


def test_dashboard_query_count_does_not_grow_with_data(staff_client, data, django_assert_max_num_queries):
    with django_assert_max_num_queries(40) as first:
        staff_client.get(URL)
    for _ in range(20):
        task(data["alice"], TaskStatus.COMPLETED, backend=data["gpu"], seconds=2)
    with django_assert_max_num_queries(len(first)):
        staff_client.get(URL)
