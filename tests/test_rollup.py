"""The dashboard's rollups: the same numbers as counting live, from far fewer rows."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from generation.models import GenerationTask, RollupMark, TaskHourStat, TaskStatus, UserDayStat
from generation.ops import rollup, stats
from models_catalog.models import ComfyBackend
from tests.test_dashboard import task

COMPARED = ("per_day", "totals", "top_users", "top_models")


@pytest.fixture
def history(make_user):
    """Finished tasks spread over 40 days, a few still active."""
    gpu = ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188")
    alice, bob = make_user("alice"), make_user("bob")
    for age_hours in (2, 3, 3, 27, 50, 75, 24 * 9, 24 * 20, 24 * 39):
        task(alice, TaskStatus.COMPLETED, backend=gpu, seconds=5, age=timedelta(hours=age_hours), batch_size=2)
    for age_hours in (4, 30, 24 * 8):
        task(bob, TaskStatus.FAILED, model="m2", backend=gpu, seconds=2, age=timedelta(hours=age_hours))
    task(bob, TaskStatus.CANCELLED, age=timedelta(hours=6))
    task(bob, TaskStatus.PENDING, age=timedelta(minutes=3))
    return {"gpu": gpu, "alice": alice, "bob": bob}


def comparable(numbers: dict) -> dict:
    out = {key: numbers[key] for key in COMPARED}
    # The hour list moves with the clock: compare the hours that hold something.
    out["per_hour"] = [r for r in numbers["per_hour"] if r["completed"] or r["failed"] or r["cancelled"]]
    out["busy"] = {b["name"]: round(b["busy_seconds"], 3) for b in numbers["backends"]}
    return out


def roll_all(now=None) -> None:
    """Roll up everything, as ticks would over a few minutes (each run is bounded)."""
    now = now or timezone.now() + timedelta(days=1)
    while (done := rollup.roll_up(now=now)).hours or done.days:
        pass
    assert rollup.mark(rollup.HOURS) == rollup.floor_hour(now - rollup.GRACE)


def live_and_rolled(days: int) -> tuple[dict, dict]:
    live = comparable(stats.dashboard_numbers(days=days))
    roll_all()
    return live, comparable(stats.dashboard_numbers(days=days))


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_rolled_up_numbers_match_the_live_count(history, days):
    live, rolled = live_and_rolled(days)
    assert TaskHourStat.objects.exists() and UserDayStat.objects.exists()
    assert rolled == live
    assert live["totals"]["completed"] > 0


def test_numbers_on_the_rollup_are_the_known_ones(history):
    roll_all()
    numbers = stats.dashboard_numbers(days=30)
    assert (numbers["totals"]["completed"], numbers["totals"]["failed"], numbers["totals"]["cancelled"]) == (8, 3, 1)
    users = [(r["username"], r["tasks"], r["images"], r["failed"]) for r in numbers["top_users"]]
    assert users == [("alice", 8, 16, 0), ("bob", 5, 0, 3)]  # bob: 3 failed, 1 cancelled, 1 pending
    models = [(r["model_name"], r["tasks"], r["completed"], r["failed"]) for r in numbers["top_models"]]
    assert models == [("m1", 10, 8, 0), ("m2", 3, 0, 3)]
    assert {b["name"]: b["busy_seconds"] for b in numbers["backends"]} == {"gpu": pytest.approx(8 * 5 + 3 * 2)}


def test_statistics_outlive_the_tasks_they_count(history):
    """Deleting history (a user, or the retention purge) leaves past statistics as they were."""
    roll_all()
    before = comparable(stats.dashboard_numbers(days=30))
    deleted, _ = GenerationTask.objects.filter(completed_at__lt=rollup.floor_hour(timezone.now())).delete()
    assert deleted
    assert comparable(stats.dashboard_numbers(days=30))["totals"] == before["totals"]


def test_a_task_ending_after_the_mark_is_counted_live(history):
    roll_all(timezone.now())
    assert rollup.mark(rollup.HOURS) <= timezone.now() - rollup.GRACE
    before = stats.dashboard_numbers(days=1)["totals"]["failed"]
    task(history["bob"], TaskStatus.FAILED, age=timedelta(seconds=30))
    assert stats.dashboard_numbers(days=1)["totals"]["failed"] == before + 1


def test_rolling_up_twice_writes_nothing_new(history):
    now = timezone.now()
    roll_all(now)
    rows = TaskHourStat.objects.count(), UserDayStat.objects.count()
    assert all(rows)
    second = rollup.roll_up(now=now)
    assert (second.hours, second.days) == (0, 0)
    assert (TaskHourStat.objects.count(), UserDayStat.objects.count()) == rows


def test_a_large_backlog_is_caught_up_over_several_runs(history, monkeypatch):
    monkeypatch.setattr(rollup, "HOURS_PER_RUN", 24 * 5)
    monkeypatch.setattr(rollup, "DAYS_PER_RUN", 4)
    live = comparable(stats.dashboard_numbers(days=90))
    runs = 0
    while True:
        done = rollup.roll_up()
        runs += 1
        # Part rolled up, part live: still the same numbers.
        assert comparable(stats.dashboard_numbers(days=90)) == live
        if not (done.hours or done.days):
            break
    assert runs >= 10  # 40 days in 4-day steps
    finished = GenerationTask.objects.filter(completed_at__lt=rollup.mark(rollup.HOURS)).count()
    assert TaskHourStat.objects.aggregate(n=Sum("tasks"))["n"] == finished


def test_nothing_finished_yet_sets_no_mark(db):
    rollup.roll_up()
    assert not RollupMark.objects.exists()


def test_the_studio_tick_rolls_up(history):
    from generation.jobs import studio_tick

    studio_tick()
    assert rollup.mark(rollup.HOURS) and rollup.mark(rollup.DAYS)
    assert TaskHourStat.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_rolling_up_at_once_count_each_task_once(make_user):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent rollups are checked on PostgreSQL (CI's second pass)")
    user = make_user("many")
    for age_hours in range(2, 60, 3):
        task(user, TaskStatus.COMPLETED, age=timedelta(hours=age_hours))
    barrier = threading.Barrier(4)
    errors = []

    def run():
        try:
            barrier.wait()
            rollup.roll_up()
        except Exception as ex:  # noqa: BLE001 - reported below
            errors.append(ex)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert TaskHourStat.objects.aggregate(n=Sum("tasks"))["n"] == 20
    assert UserDayStat.objects.aggregate(n=Sum("tasks"))["n"] == GenerationTask.objects.filter(
        completed_at__lt=rollup.mark(rollup.DAYS)).count()
