"""Backend leases: which pump drives which backend (generation.fleet.holdings).

The rules, on the database alone (the processes that live by them: test_pump.py).
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from generation.fleet.holdings import Holdings, backends_held, backends_unheld
from generation.models import BackendLease, GenerationTask, Pump
from models_catalog.models import ComfyBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def backends(db):
    return [ComfyBackend.objects.create(name=f"gpu-{i}", base_url=f"http://127.0.0.1:{9100 + i}") for i in range(3)]


def pump(name: str) -> Holdings:
    row = Pump.objects.create(heartbeat_at=timezone.now(), started_at=timezone.now())
    return Holdings(f"pump{row.pk}-{name}", row.pk)


def owners() -> dict[int, str]:
    return dict(BackendLease.objects.values_list("backend_id", "owner"))


def test_one_pump_holds_every_backend_and_renews_its_leases(backends):
    first = pump("a")
    assert first.beat(pumps=1) == set()
    assert first.held == first.drivable() == {b.pk for b in backends}
    assert set(owners().values()) == {first.owner}
    BackendLease.objects.update(until=timezone.now() + timedelta(seconds=1))
    first.beat(pumps=1)
    assert all(until > timezone.now() + timedelta(seconds=30) for until in BackendLease.objects.values_list(
        "until", flat=True))
    assert backends_held() == {first.pump_id: ["gpu-0", "gpu-1", "gpu-2"]} and backends_unheld() == []


def test_a_second_pump_gets_its_share_and_no_backend_has_two_holders(backends):
    first, second = pump("a"), pump("b")
    first.beat(pumps=1)
    # The second starts: it finds nothing free yet, and the first gives back its excess.
    assert second.beat(pumps=2) == set() and second.held == set()
    lost = first.beat(pumps=2)
    assert lost == {backends[2].pk} and first.held == {backends[0].pk, backends[1].pk}
    assert second.wanting is False  # (it beats again at its next beat, not each poll)
    second.beat(pumps=2)
    assert second.held == {backends[2].pk}
    assert owners() == {backends[0].pk: first.owner, backends[1].pk: first.owner, backends[2].pk: second.owner}
    # Stable from here: neither gives back nor takes anything more.
    assert first.beat(pumps=2) == set() and second.beat(pumps=2) == set()
    assert owners()[backends[2].pk] == second.owner


def test_a_lapsed_lease_is_taken_over_and_its_old_holder_is_told(backends):
    first, second = pump("a"), pump("b")
    first.beat(pumps=1)
    # The first stalls (SIGSTOP) past its lease; the second sees it as the only pump alive.
    BackendLease.objects.update(until=timezone.now() - timedelta(seconds=1))
    second.beat(pumps=1)
    assert second.held == {b.pk for b in backends}
    # It wakes up: the backends are the other's now, and it says which it lost.
    assert first.beat(pumps=2) == {b.pk for b in backends} and first.held == set()
    assert set(owners().values()) == {second.owner}


def test_a_lapsed_lease_still_its_holders_own_is_renewed(backends):
    """A stall nobody used (no other pump): the backends stay with it, nothing is lost."""
    first = pump("a")
    first.beat(pumps=1)
    BackendLease.objects.update(until=timezone.now() - timedelta(seconds=5))
    assert first.beat(pumps=1) == set() and first.held == {b.pk for b in backends}


def test_a_taken_backend_drains_while_another_pump_s_task_lease_lives(backends, catalog, make_user):
    first, second = pump("a"), pump("b")
    first.beat(pumps=1)
    task = GenerationTask.objects.create(
        user=make_user(), prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1, status="processing",
        backend=backends[0], assigned_at=timezone.now(),
        lease_owner=f"{first.owner}:1", lease_until=timezone.now() + timedelta(seconds=30))
    # The first lost its backends (stalled) while its runner's task lease still lives.
    BackendLease.objects.update(until=timezone.now() - timedelta(seconds=1))
    second.beat(pumps=1)
    every = set(ComfyBackend.objects.values_list("pk", flat=True))  # the catalog's own included
    assert second.held == every
    assert second.drivable() == every - {backends[0].pk}  # nothing claimed on gpu-0 yet
    GenerationTask.objects.filter(pk=task.pk).update(lease_owner="", lease_until=None)  # the runner let go
    second.drain_check()
    assert second.drivable() == every


def test_a_pump_ending_gives_its_backends_back_and_the_next_one_hurries(backends):
    first, second = pump("a"), pump("b")
    first.beat(pumps=1)
    second.beat(pumps=1)
    assert second.held == set() and second.wanting is False  # all held by a live pump
    Pump.objects.filter(pk=first.pump_id).delete()  # an ending pump deletes its row first
    second.beat(pumps=1)
    assert second.held == set() and second.wanting is True  # coming free: beat again at the next poll
    first.release()
    second.beat(pumps=1)
    assert second.held == {b.pk for b in backends} and second.wanting is False


def test_the_unheld_backends_are_the_enabled_ones_no_live_lease_covers(backends):
    ComfyBackend.objects.filter(pk=backends[2].pk).update(enabled=False)
    assert backends_unheld() == ["gpu-0", "gpu-1"]
    first = pump("a")
    first.beat(pumps=1)
    assert backends_unheld() == []
    BackendLease.objects.filter(backend=backends[0]).update(until=timezone.now() - timedelta(seconds=1))
    assert backends_unheld() == ["gpu-0"]
