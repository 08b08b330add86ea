"""The pump: one django-q2 job follows many prompts; pumps hand over and take over.

Real qcluster processes (started here, with the settings each test needs), demo engines
on real ports. What the engines were sent is read from their own stats, so "submitted
once" is the engine's word, not Easel's.
"""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from generation.models import GenerationTask
from tests.conftest import Cluster, api_create, cluster_env, tasks_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

@pytest.fixture
def fleet(transactional_db, make_engine, no_cluster):
    """Three demo engines, two tasks in flight each; no other cluster runs."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, WorkflowTemplate
    from models_catalog.services import backend_ensure, catalog_sync

    ensure_builtin_templates(WorkflowTemplate)
    engines = [make_engine() for _ in range(3)]
    backends = [backend_ensure(name=f"gpu-{i}", base_url=e.url) for i, e in enumerate(engines)]
    catalog_sync(backends=backends)
    Checkpoint.objects.update(default_steps=6, default_width=64, default_height=64)
    yield list(zip(engines, backends))


@pytest.fixture
def clusters():
    started: list[Cluster] = []

    def start(**env) -> Cluster:
        cluster = Cluster({**cluster_env(), **{k: str(v) for k, v in env.items()}})
        cluster.start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def client(make_user, api_client_for):
    return api_client_for(make_user("pumped", max_concurrent_tasks=50, daily_image_quota=1000))


def create(client, n: int) -> list[int]:
    return api_create(client, n)


def finished(ids, timeout=120) -> dict[int, GenerationTask]:
    return tasks_finished(ids, timeout=timeout)


def running(ids) -> None:
    wait_for(lambda: GenerationTask.objects.filter(pk__in=ids, status="processing").count() == len(ids), timeout=60,
             message=f"{len(ids)} prompts running")


def completed_once(fleet, rows) -> None:
    """Every task completed with one image; the engines saw each prompt submitted once."""
    assert all(t.status == "completed" for t in rows.values()), {t.pk: t.error_message for t in rows.values()}
    assert sorted(submissions(fleet).values()) == [1] * len(rows)
    assert all(t.images.count() == 1 for t in rows.values())


def killed_then_finished(victim, survivor, ids, timeout: float) -> dict[int, GenerationTask]:
    """SIGKILL to the victim cluster's whole process group, then the tasks once they end
    (with the survivor's log when they do not)."""
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    try:
        return finished(ids, timeout=timeout)
    except AssertionError:
        print(survivor.output()[-6000:])
        raise


def submissions(fleet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for engine, _backend in fleet:
        for prompt_id, n in engine.stats()["submissions"].items():
            counts[prompt_id] = counts.get(prompt_id, 0) + n
    return counts


def test_one_worker_follows_every_prompt_the_fleet_holds(fleet, clusters, client):
    """Six prompts in flight on three engines, with two workers: no worker per prompt.
    (Before the pump each running prompt held a worker, so two workers ran two.)"""
    for engine, _backend in fleet:
        engine.faults(step_delay=0.4)
    clusters(Q_WORKERS=2)
    ids = create(client, 6)
    running(ids)
    rows = finished(ids)
    assert all(t.status == "completed" for t in rows.values()), {t.pk: t.error_message for t in rows.values()}
    assert sorted(submissions(fleet).values()) == [1] * 6  # (images: the tests below)


def test_a_pump_hands_over_mid_run_and_nothing_runs_twice(fleet, clusters, client, settings):
    """A pump's time is up while its prompts run: it lets go, the next pump follows the
    same prompts on their engines (never submitting them again), and they complete."""
    for engine, _backend in fleet:
        engine.faults(step_delay=1.0)  # about 6 s a prompt: longer than a pump runs
    clusters(EASEL_PUMP_SECONDS=3)
    ids = create(client, 3)
    rows = finished(ids)
    completed_once(fleet, rows)
    # Claimed again by the next pump(s) while running.
    assert all(t.attempts >= 2 for t in rows.values()), {t.pk: t.attempts for t in rows.values()}


def test_a_killed_cluster_s_prompts_are_taken_over_by_the_other(fleet, clusters, client):
    """The cluster running the pump is killed with SIGKILL while its prompts run. The
    other cluster starts a pump at its next tick (the dead one's heartbeat has stopped),
    which takes the tasks over once their leases run out and follows them to the end on
    the engines they run on: every task completes, each prompt was submitted once."""
    from django_q.models import Schedule

    # The tick's schedule, as migrations make it (an earlier test's flush may have taken it).
    Schedule.objects.update_or_create(name="easel-tick", defaults={
        "func": "generation.jobs.studio_tick", "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1})
    for engine, _backend in fleet:
        engine.faults(step_delay=1.5)  # about 9 s a prompt
    env = dict(EASEL_TASK_LEASE_SECONDS=8, EASEL_PUMP_SECONDS=600)
    victim = clusters(**env)
    ids = create(client, 6)
    running(ids)
    survivor = clusters(**env)
    rows = killed_then_finished(victim, survivor, ids, timeout=200)
    completed_once(fleet, rows)
    # Claimed a second time, by the survivor's pump.
    assert all(t.attempts >= 2 for t in rows.values()), {t.pk: t.attempts for t in rows.values()}


@pytest.mark.parametrize("how", ["cluster", "worker"])
def test_a_stopping_cluster_s_pump_hands_over_at_once(fleet, clusters, client, how):
    """The cluster is stopped while its pump follows prompts, as a supervisor (and the
    studio) stops a qcluster: SIGTERM to its main process, after which django-q2 waits
    for every job to end. Or the pump's worker itself gets SIGTERM (django-q2's timeout,
    a signal to the whole group). The pump lets go of its tasks at once instead of
    holding the stop for EASEL_PUMP_SECONDS, and the next pump (of the next cluster, or
    of the same one) follows the same prompts to the end, submitting none again."""
    for engine, _backend in fleet:
        engine.faults(step_delay=1.0)  # about 6 s a prompt
    env = dict(EASEL_PUMP_SECONDS=600, EASEL_TASK_LEASE_SECONDS=120)
    first = clusters(**env)
    ids = create(client, 3)
    running(ids)
    if how == "cluster":
        first.proc.terminate()
    else:
        # The worker of the pump holding them (its name, in each lease, ends "-<pid>-<uuid>").
        owner = GenerationTask.objects.get(pk=ids[0]).lease_owner
        os.kill(int(owner.split(":")[0].split("-")[-2]), signal.SIGTERM)
    # Let go (no lease held) while the prompts still run on their engines; the lease
    # (120 s) would otherwise keep them from any other pump for two minutes.
    wait_for(lambda: not GenerationTask.objects.filter(pk__in=ids).exclude(lease_owner="").exists(), timeout=15,
             message="the pump to let go of its tasks")
    if how == "cluster":
        first.proc.wait(20)  # and the cluster is not held for the pump's 600 s
        assert GenerationTask.objects.filter(pk__in=ids, status="processing").count() == 3
        clusters(**env)
    # (A worker that ended: its cluster's next pump follows them, well before the lease ran out.)
    rows = finished(ids, timeout=60)
    completed_once(fleet, rows)


def test_a_pump_paused_past_its_lease_interrupts_nothing_when_it_wakes(fleet, clusters, client):
    """A cluster frozen with SIGSTOP (a stalled host, a long pause) past its tasks'
    leases: the other cluster's pump takes them over and follows them. When the frozen
    one resumes, its runners find their leases gone and let go quietly: no prompt is
    interrupted or submitted again, every task completes once."""
    for engine, _backend in fleet:
        engine.faults(step_delay=2.0)  # about 12 s a prompt: still running when the pause ends
    env = dict(EASEL_TASK_LEASE_SECONDS=5, EASEL_PUMP_SECONDS=600)
    frozen = clusters(**env)
    ids = create(client, 3)
    running(ids)
    owners = dict(GenerationTask.objects.filter(pk__in=ids).values_list("pk", "lease_owner"))
    survivor = clusters(**env)
    os.killpg(frozen.proc.pid, signal.SIGSTOP)
    try:
        # The frozen pump's heartbeat lapses; a pump is queued for the survivor, as the
        # tick would (its minute is not what this test is about).
        from generation.fleet.pump import pumps_alive, pumps_ensure

        wait_for(lambda: not pumps_alive().exists(), timeout=30, message="the frozen pump to go stale")
        pumps_ensure()
        # The survivor's pump claims each task once its lease has run out.
        wait_for(lambda: all(owner and owner != owners[pk] for pk, owner in
                             GenerationTask.objects.filter(pk__in=ids).values_list("pk", "lease_owner")),
                 timeout=90, message="the survivor to take the tasks over")
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
    try:
        rows = finished(ids, timeout=120)
    except AssertionError:
        print(survivor.output()[-6000:])
        raise
    completed_once(fleet, rows)
    executed = [p for engine, _b in fleet for p in engine.stats()["executed"]]
    assert sorted(executed) == sorted({str(t.prompt_id) for t in rows.values()})  # none started twice


def test_a_pass_asked_for_while_dispatch_was_busy_is_run_by_the_pump(fleet, clusters, client):
    """A create that finds dispatch busy asks for one more pass and returns; when no pass
    is left to take that request, the pump's next poll runs it: the task starts within
    seconds, with no job queued per request and no wait for the minute's tick."""
    from models_catalog.models import ComfyBackend

    from generation.fleet.dispatch import again_request, again_requested

    clusters()
    ComfyBackend.objects.update(draining=True)  # no backend takes the task when it is created
    [task_id] = create(client, 1)
    assert GenerationTask.objects.get(pk=task_id).backend_id is None
    ComfyBackend.objects.update(draining=False)  # free again, but nobody dispatches...
    again_request()  # ...except the pass the busy create asked for
    rows = finished([task_id], timeout=30)
    assert rows[task_id].status == "completed"
    assert not again_requested()


def test_two_clusters_share_the_backends_and_one_takes_over_when_the_other_is_killed(fleet, clusters, client):
    """Two pumps, each in a cluster of its own, split the backends (a lease per backend).
    At no moment do two pumps follow prompts on one backend. The second cluster is killed
    with SIGKILL mid-run: the first pump takes its backends once their leases run out
    and follows their prompts to the end. Every task completes once; the engines saw
    each prompt submitted once."""
    import threading

    from django.db import connection
    from django.db.models.functions import Now

    from generation.fleet.holdings import backends_held
    from generation.models import Pump

    for engine, _backend in fleet:
        engine.faults(step_delay=1.5)  # about 9 s a prompt
    env = dict(EASEL_PUMPS=2, EASEL_TASK_LEASE_SECONDS=8, EASEL_PUMP_SECONDS=600)

    def pumps_by_cluster():
        return {os.getpgid(pid): pk for pk, pid in Pump.objects.filter(started_at__isnull=False, pid__isnull=False)
                .values_list("pk", "pid") if _alive(pid)}

    # One worker, for its pump. django-q2's pusher takes queued jobs ahead of its workers,
    # so it is paused while the second cluster starts: the second pump is that cluster's.
    first = clusters(Q_WORKERS=1, EASEL_PUMPS=1, **{k: v for k, v in env.items() if k != "EASEL_PUMPS"})
    wait_for(lambda: first.proc.pid in pumps_by_cluster(), timeout=30, message="the first cluster's pump")
    pusher = int(re.search(r"pushing tasks at (\d+)", first.output()).group(1))
    os.kill(pusher, signal.SIGSTOP)
    try:
        second = clusters(**env)
        mine = wait_for(lambda: (p := pumps_by_cluster()).keys() == {first.proc.pid, second.proc.pid} and p,
                        timeout=60, message="a pump in each cluster")
    finally:
        os.kill(pusher, signal.SIGCONT)
    held = wait_for(lambda: (h := backends_held()).keys() == set(mine.values())
                    and sorted(sum(h.values(), [])) == ["gpu-0", "gpu-1", "gpu-2"] and h,
                    timeout=30, message="the backends shared by the two pumps")
    assert sorted(len(names) for names in held.values()) == [1, 2]

    # Who follows what on each backend, sampled all through the run (the task leases).
    seen_two: list = []
    done = threading.Event()

    def watch():
        try:
            while not done.is_set():
                owners: dict[int, set[str]] = {}
                for backend, owner in (GenerationTask.objects.filter(lease_until__gte=Now()).exclude(lease_owner="")
                                       .values_list("backend_id", "lease_owner")):
                    owners.setdefault(backend, set()).add(owner.split(":")[0])
                seen_two.extend((b, o) for b, o in owners.items() if len(o) > 1)
                done.wait(0.1)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ids = create(client, 6)
        running(ids)
        rows = killed_then_finished(second, first, ids, timeout=150)
    finally:
        done.set()
        watcher.join()
    completed_once(fleet, rows)
    assert seen_two == []
    # The survivor holds every backend now, and claimed the dead pump's tasks again.
    assert backends_held() == {mine[first.proc.pid]: ["gpu-0", "gpu-1", "gpu-2"]}
    assert any(t.attempts >= 2 for t in rows.values()), {t.pk: t.attempts for t in rows.values()}


def _alive(pid: int) -> bool:
    try:
        os.getpgid(pid)
        return True
    except ProcessLookupError:
        return False


def test_engines_added_in_the_admin_are_busy_within_seconds(make_engine, no_cluster, clusters, client, django_user_model):
    """The acceptance of the pump: with the run command's worker count, a second and a
    third engine added in the admin while tasks wait take prompts within seconds, with
    no change to Q_WORKERS and nothing restarted."""
    from django.test import Client

    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate
    from models_catalog.services import backend_ensure, catalog_sync

    ensure_builtin_templates(WorkflowTemplate)
    engines = [make_engine() for _ in range(3)]
    for engine in engines:
        engine.faults(step_delay=0.5)  # about 3 s a prompt
    catalog_sync(backends=[backend_ensure(name="gpu-0", base_url=engines[0].url)])
    Checkpoint.objects.update(default_steps=6, default_width=64, default_height=64)
    clusters(Q_WORKERS=4)  # the studio's default
    ids = create(client, 12)
    running(ids[:2])  # the first engine's two slots; ten tasks wait

    staff = Client()
    staff.force_login(django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123456"))
    added_at = time.monotonic()
    for i, engine in enumerate(engines[1:], start=1):
        response = staff.post("/admin/models_catalog/comfybackend/add/", {
            "name": f"gpu-{i}", "kind": "comfyui", "base_url": engine.url, "enabled": "on", "max_in_flight": 2,
            "region": "cn-north-1", "requests_per_second": 2})
        assert response.status_code == 302, response.content.decode()[-3000:]
    assert ComfyBackend.objects.count() == 3
    wait_for(lambda: all(engine.stats()["submissions"] for engine in engines[1:]), timeout=30,
             message="the added engines to take prompts")
    busy_after = time.monotonic() - added_at
    rows = finished(ids, timeout=120)
    fleet = [(engine, None) for engine in engines]
    completed_once(fleet, rows)
    print(f"the added engines took prompts {busy_after:.1f} s after they were added")
    assert {t.backend.name for t in rows.values()} == {"gpu-0", "gpu-1", "gpu-2"}
