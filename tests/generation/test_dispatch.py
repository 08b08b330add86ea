"""The dispatcher's decisions: routing, model affinity, capacity, fairness, priority, caps."""
import pytest

from generation.fleet.dispatch import dispatch
from generation.outlook import task_outlook
from generation.models import GenerationTask, TaskStatus
from generation.services import generation_create
from models_catalog.models import Checkpoint, ComfyBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(catalog):
    """Two online backends: A has model x and y, B has only y. One slot each unless set."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    ComfyBackend.objects.all().delete()
    a = ComfyBackend.objects.create(name="a", base_url="http://a.invalid", is_online=True, max_in_flight=1)
    b = ComfyBackend.objects.create(name="b", base_url="http://b.invalid", is_online=True, max_in_flight=1)
    x = Checkpoint.objects.create(name="x", ckpt_name="x.safetensors")
    y = Checkpoint.objects.create(name="y", ckpt_name="y.safetensors")
    x.backends.add(a)
    y.backends.add(a, b)
    return {"a": a, "b": b, "x": x, "y": y}


def create(user, model="y", **values):
    # generation_create dispatches on commit; in these tests (no commit) we call
    # dispatch() ourselves to look at each decision.
    return generation_create(user=user, prompt="p", model_name=model, width=64, height=64, **values)


def assigned(task) -> str | None:
    task.refresh_from_db()
    return task.backend.name if task.backend_id else None


def test_routes_by_checkpoint_availability(fleet, make_user):
    user = make_user(max_concurrent_tasks=5)
    only_a = create(user, model="x")
    dispatch(probe=False)
    assert assigned(only_a) == "a"
    second_x = create(user, model="x")
    dispatch(probe=False)
    assert assigned(second_x) is None  # a is full; b does not have x


def test_offline_draining_and_disabled_backends_get_nothing(fleet, make_user):
    user = make_user(max_concurrent_tasks=5)
    ComfyBackend.objects.filter(name="a").update(is_online=False)
    ComfyBackend.objects.filter(name="b").update(draining=True)
    task = create(user)
    assert dispatch(probe=False) == []
    ComfyBackend.objects.filter(name="b").update(draining=False, enabled=False)
    assert dispatch(probe=False) == []
    ComfyBackend.objects.filter(name="b").update(enabled=True)
    dispatch(probe=False)
    assert assigned(task) == "b"


def test_prefers_the_backend_with_the_model_loaded_then_the_least_loaded(fleet, make_user):
    user = make_user(max_concurrent_tasks=5)
    ComfyBackend.objects.update(max_in_flight=2)
    ComfyBackend.objects.filter(name="b").update(loaded_checkpoint="y.safetensors")
    ComfyBackend.objects.filter(name="a").update(loaded_checkpoint="x.safetensors")
    first = create(user)
    dispatch(probe=False)
    assert assigned(first) == "b"  # no reload of y
    second = create(user)
    dispatch(probe=False)
    assert assigned(second) == "a"  # idle beats loaded: never queue behind work while a backend idles
    ComfyBackend.objects.update(loaded_checkpoint="")
    ComfyBackend.objects.filter(name="a").update(loaded_checkpoint="y.safetensors")
    GenerationTask.objects.filter(pk=first.pk).update(status=TaskStatus.COMPLETED)
    third = create(user)
    dispatch(probe=False)
    assert assigned(third) == "b"  # b is idle now, a is busy


def test_capacity_per_backend_is_respected(fleet, make_user):
    ComfyBackend.objects.update(max_in_flight=2)
    users = [make_user(max_concurrent_tasks=10) for _ in range(3)]
    tasks = [create(u) for u in users for _ in range(3)]
    dispatch(probe=False)
    counts = {name: GenerationTask.objects.filter(backend__name=name).count() for name in ("a", "b")}
    assert counts == {"a": 2, "b": 2}
    assert sum(1 for t in tasks if assigned(t) is None) == 5
    # Finishing one frees exactly one slot.
    done = GenerationTask.objects.filter(backend__name="a").first()
    GenerationTask.objects.filter(pk=done.pk).update(status=TaskStatus.COMPLETED)
    assert len(dispatch(probe=False)) == 1


def test_round_robin_a_light_user_is_served_within_one_round(fleet, make_user):
    heavy, light = make_user("heavy", max_concurrent_tasks=100), make_user("light", max_concurrent_tasks=100)
    for _ in range(20):
        create(heavy)
    dispatch(probe=False)  # heavy takes both slots
    late = create(light)
    GenerationTask.objects.filter(backend__isnull=False).update(status=TaskStatus.COMPLETED)
    dispatch(probe=False)
    # The next free slot goes to the light user, not to heavy's 18 older tasks.
    assert assigned(late) is not None
    late.refresh_from_db()
    assert task_outlook(late).position is None


def test_users_alternate_when_capacity_frees(fleet, make_user):
    ComfyBackend.objects.update(max_in_flight=1)
    ComfyBackend.objects.filter(name="b").update(enabled=False)
    u1, u2 = make_user(max_concurrent_tasks=10), make_user(max_concurrent_tasks=10)
    for _ in range(3):
        create(u1)
    for _ in range(3):
        create(u2)
    order = []
    for _ in range(6):
        [task_id] = dispatch(probe=False)
        task = GenerationTask.objects.get(pk=task_id)
        order.append(task.user_id)
        GenerationTask.objects.filter(pk=task_id).update(status=TaskStatus.COMPLETED)
    assert order == [u1.pk, u2.pk, u1.pk, u2.pk, u1.pk, u2.pk]


def test_priority_users_go_first(fleet, make_user):
    ComfyBackend.objects.filter(name="b").update(enabled=False)
    normal, vip = make_user(max_concurrent_tasks=10), make_user(max_concurrent_tasks=10, priority=10)
    older = create(normal)
    newer_vip = create(vip)
    dispatch(probe=False)
    assert assigned(newer_vip) == "a" and assigned(older) is None


def test_per_user_concurrency_cap(fleet, make_user):
    ComfyBackend.objects.update(max_in_flight=5)
    user = make_user(max_concurrent_tasks=2)
    tasks = [create(user) for _ in range(4)]
    dispatch(probe=False)
    assert sum(1 for t in tasks if assigned(t)) == 2


def test_cancelled_tasks_are_never_dispatched(fleet, make_user):
    from generation.services import generation_cancel

    task = create(make_user())
    generation_cancel(task=task)
    assert dispatch(probe=False) == []
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED and task.backend_id is None


def test_queue_position_counts_waiting_tasks_ahead(fleet, make_user):
    ComfyBackend.objects.update(is_online=False)
    user = make_user(max_concurrent_tasks=10)
    tasks = [create(user) for _ in range(3)]
    dispatch(probe=False)
    assert [task_outlook(GenerationTask.objects.get(pk=t.pk)).position for t in tasks] == [1, 2, 3]


def test_dispatch_runs_on_the_29th_of_february(fleet, make_user, monkeypatch):
    """Today's date once took part in the round-robin's arithmetic: on a 29 February
    (next: 2028) it raised, and nothing was dispatched all day."""
    from datetime import datetime, timezone as dt_timezone

    from django.utils import timezone

    leap_day = datetime(2028, 2, 29, 12, 0, tzinfo=dt_timezone.utc)
    monkeypatch.setattr(timezone, "now", lambda: leap_day)
    task = create(make_user())
    assert dispatch(probe=False) == [task.pk]
    assert task.user.__class__.objects.get(pk=task.user_id).last_served_at == leap_day


def test_the_round_robin_reads_no_history(fleet, make_user):
    """Who was served last is on the user's row: a pass costs the same queries and
    orders users the same way whether a user has 3 or 300 finished tasks."""
    heavy, light = make_user(max_concurrent_tasks=5, daily_image_quota=1000), make_user(max_concurrent_tasks=5)
    for _ in range(300):
        done = create(heavy)
        GenerationTask.objects.filter(pk=done.pk).update(status=TaskStatus.COMPLETED)
    dispatch(probe=False)  # nothing waits: the served marks stay as they are
    first, second = create(heavy), create(light)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        dispatch(probe=False)
    # No query over the tasks' history (the old MAX(assigned_at) per user).
    assert not [q["sql"] for q in queries.captured_queries if "MAX(" in q["sql"].upper()]
    # Neither was served before (the finished ones were made complete by hand): the
    # oldest waiting task goes first, then the other user.
    assert {assigned(first), assigned(second)} == {"a", "b"}
    heavy.refresh_from_db()
    assert heavy.last_served_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_web_request_does_not_wait_for_a_running_dispatch(fleet, make_user, monkeypatch):
    """With another pass holding the lock (PostgreSQL), a create's inline dispatch does not
    queue behind it: it asks for one more pass (a flag the pass holding the lock, or the
    pump, takes) and returns."""
    import threading

    from django.db import connection, connections, transaction

    from generation.fleet import locks

    if connection.vendor != "postgresql":
        pytest.skip("the try-lock is PostgreSQL's advisory lock; SQLite runs one transaction at a time")
    from generation.fleet.dispatch import again_requested

    holding, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            locks.transaction_lock(locks.DISPATCH)
            holding.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        task = create(make_user())
        assert dispatch(probe=False, wait=False) == []
        assert again_requested()  # one more pass is asked for (a flag, not a job per request)
        assert assigned(task) is None
    finally:
        release.set()
        holder.join()
    assert dispatch(probe=False) == [task.pk]
    assert not again_requested()  # that pass took the request


def test_a_pass_assigns_any_number_of_tasks_in_the_same_statements(fleet, make_user):
    """The assignments of a pass and their attempts are written together: a pass that
    assigns eight tasks runs no more statements than one that assigns two."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django.utils import timezone

    from generation.models import Pump, TaskRun

    # A live pump: neither pass queues one (that is not the assignments' cost).
    Pump.objects.create(heartbeat_at=timezone.now(), started_at=timezone.now())

    def a_pass(room: int) -> int:
        ComfyBackend.objects.update(max_in_flight=room)
        with CaptureQueriesContext(connection) as queries:
            assert len(dispatch(probe=False)) == 2 * room
        return len(queries.captured_queries)

    users = [make_user(max_concurrent_tasks=20) for _ in range(4)]
    for user in users:
        for _ in range(3):
            create(user)
    two = a_pass(1)
    GenerationTask.objects.filter(backend__isnull=False).update(status=TaskStatus.COMPLETED)
    eight = a_pass(4)
    assert eight == two
    # Each assigned task has its one open attempt, on its backend.
    for task in GenerationTask.objects.filter(backend__isnull=False):
        [run] = TaskRun.objects.filter(task=task)
        assert (run.backend_id, run.outcome, run.number) == (task.backend_id, "running", 1)


def test_a_pass_reads_only_as_many_waiting_tasks_of_a_user_as_there_is_room(fleet, make_user, monkeypatch):
    """A pass after each ending has room for a few tasks: it reads that many of each
    user's oldest, not a screenful, however long the queue."""
    from generation.fleet import dispatch as dispatcher

    read: list[int] = []
    waiting = dispatcher._waiting
    monkeypatch.setattr(dispatcher, "_waiting", lambda per_user: read.append(len(rows := waiting(per_user))) or rows)
    users = [make_user(max_concurrent_tasks=100) for _ in range(3)]
    for user in users:
        for _ in range(30):
            create(user)
    assert len(dispatch(probe=False)) == 2  # a and b, one slot each
    assert read == [2 * 3]  # room for 2: each user's two oldest, of 90


def test_a_user_whose_oldest_tasks_wait_for_a_busy_backend_gets_the_free_one(fleet, make_user):
    """The oldest tasks need model x, which only the busy backend a has: the pass reads
    deeper and gives b the user's first task it can run."""
    user = make_user(max_concurrent_tasks=100)
    busy = create(user, model="x")
    dispatch(probe=False)
    assert assigned(busy) == "a"
    for _ in range(3):
        create(user, model="x")
    runnable = create(user, model="y")
    assert dispatch(probe=False) == [runnable.pk]
    assert assigned(runnable) == "b"
