"""The named status changes: each happens only from the states it names, and only for
the lease owner where it says so; every ending queues the finished job once committed."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from generation import transitions
from generation.models import GenerationTask, TaskPreview, TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: calls.append(args))
    return calls


@pytest.fixture
def task(make_user, catalog):
    return GenerationTask.objects.create(
        user=make_user(), prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1,
    )


def reload(task) -> GenerationTask:
    return GenerationTask.objects.get(pk=task.pk)


def test_assign_only_a_waiting_unassigned_task(task, catalog):
    backend = catalog["backend"]
    assert transitions.assign(task.pk, backend_id=backend.pk)
    assert not transitions.assign(task.pk, backend_id=backend.pk)  # already has one
    assert reload(task).backend_id == backend.pk
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.CANCELLED, backend=None)
    assert not transitions.assign(task.pk, backend_id=backend.pk)  # cancelled stays cancelled


def test_claim_needs_a_backend_and_a_free_or_lapsed_lease(task, catalog):
    assert not transitions.claim(task.pk, owner="a")  # not assigned yet
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    assert transitions.claim(task.pk, owner="a")
    assert not transitions.claim(task.pk, owner="b")  # held
    GenerationTask.objects.filter(pk=task.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert transitions.claim(task.pk, owner="b")  # lapsed: another job may take over
    row = reload(task)
    assert row.lease_owner == "b" and row.attempts == 2


def test_claim_many_takes_each_free_lease_once_under_its_own_owner(task, catalog, make_user):
    from generation.fleet.runner import tasks_claimed

    backend = catalog["backend"]
    other = GenerationTask.objects.create(
        user=make_user(), prompt="a harbour", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=2,
    )
    waiting = GenerationTask.objects.create(user=other.user, prompt="unassigned", width=64, height=64, steps=4,
                                            cfg=7, sampler="euler", scheduler="normal", seed=3)
    for row in (task, other):
        assert transitions.assign(row.pk, backend_id=backend.pk)
    assert transitions.claim(other.pk, owner="someone-else")
    ids = [task.pk, other.pk, waiting.pk]

    transitions.claim_many(ids, owner_prefix="pump9-host_1")
    claimed = list(tasks_claimed(ids, owner_prefix="pump9-host_1"))
    assert [t.pk for t in claimed] == [task.pk]  # not one held by another, nor one without a backend
    assert claimed[0].lease_owner == f"pump9-host_1:{task.pk}" and claimed[0].attempts == 1
    assert claimed[0].lease_until > timezone.now()
    # A second pump finds nothing left; `_` in a prefix is no wildcard.
    transitions.claim_many(ids, owner_prefix="pump9-host%1")
    assert list(tasks_claimed(ids, owner_prefix="pump9-host%1")) == []
    assert list(tasks_claimed(ids, owner_prefix="pump9-hostX1")) == []


def test_claimed_tasks_come_with_the_rows_their_run_reads_each_its_own_copy(task, catalog, make_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.fleet.runner import tasks_claimed
    from models_catalog.models import WorkflowTemplate

    backend = catalog["backend"]
    task.template = WorkflowTemplate.objects.filter(builtin=True).order_by("pk").first()
    task.save()
    other = GenerationTask.objects.create(
        user=make_user(), prompt="a harbour", model_name="demo-sd15", checkpoint=task.checkpoint,
        template=task.template, width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=2)
    for row in (task, other):
        assert transitions.assign(row.pk, backend_id=backend.pk)
    transitions.claim_many([other.pk, task.pk], owner_prefix="pump3-host")
    with CaptureQueriesContext(connection) as reads:
        claimed = tasks_claimed([other.pk, task.pk], owner_prefix="pump3-host")
    assert [t.pk for t in claimed] == [other.pk, task.pk]  # in the order given
    # The backend, template and checkpoint shared by both were read once, each task once.
    tables = [q["sql"].split(" FROM ")[1].split()[0].strip('"`') for q in reads.captured_queries]
    for table in ("generation_generationtask", "models_catalog_workflowtemplate", "models_catalog_checkpoint",
                  "models_catalog_comfybackend"):
        assert tables.count(table) == (2 if table == "generation_generationtask" else 1), tables
    with CaptureQueriesContext(connection) as later:
        for claimed_task in claimed:
            assert claimed_task.backend.name == backend.name and claimed_task.backend.base_url == backend.base_url
            assert claimed_task.checkpoint.ckpt_name == task.checkpoint.ckpt_name
            assert claimed_task.template.pk == task.template_id and claimed_task.template.input_list is not None
            assert claimed_task.source_image is None
            assert claimed_task.prompt == GenerationTask.objects.get(pk=claimed_task.pk).prompt
    assert len(later) == 2  # only the two reads of the check above
    # Each its own backend: one runner marking it offline does not change another's.
    claimed[0].backend.is_online = not backend.is_online
    assert claimed[1].backend.is_online == backend.is_online


def test_a_lease_is_judged_by_the_database_s_clock(task, catalog, monkeypatch):
    """Leases are taken on several hosts: one whose clock runs ten minutes ahead must
    not find a live lease lapsed (nor give its own a longer life)."""
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    assert transitions.claim(task.pk, owner="a")
    lease = reload(task).lease_until
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(minutes=10))
    assert not transitions.claim(task.pk, owner="b")  # held, whatever this host thinks
    monkeypatch.setattr(timezone, "now", real_now)
    assert abs((lease - timezone.now()).total_seconds() - 60) < 5  # EASEL_TASK_LEASE_SECONDS from now


def test_only_the_lease_owner_starts_completes_or_fails(task, catalog, queued, django_capture_on_commit_callbacks):
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    transitions.claim(task.pk, owner="a")
    task.refresh_from_db()
    assert not transitions.start(task, owner="b")
    assert transitions.start(task, owner="a")
    assert task.status == TaskStatus.PROCESSING and task.started_at and task.submitted_at
    TaskPreview.objects.create(task=task, image=b"x")
    assert not transitions.complete(task, owner="b")
    with django_capture_on_commit_callbacks(execute=True):
        assert transitions.complete(task, owner="a")
    row = reload(task)
    assert row.status == TaskStatus.COMPLETED and row.lease_owner == "" and row.completed_at
    assert not TaskPreview.objects.filter(task=task).exists()
    assert queued == [("generation.jobs.generation_finished", task.pk)]
    assert not transitions.fail(task, owner="a", code="x", message="late")  # final states stay final


def test_fail_keeps_the_reason_and_fires_the_finished_job(task, catalog, queued, django_capture_on_commit_callbacks):
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    transitions.claim(task.pk, owner="a")
    with django_capture_on_commit_callbacks(execute=True):
        assert transitions.fail(task, owner="a", code="timeout", message="Timed out.", fields={"steps": ["x"]})
    row = reload(task)
    assert (row.status, row.error_code, row.error_message, row.error_fields) == (
        TaskStatus.FAILED, "timeout", "Timed out.", {"steps": ["x"]})
    assert queued == [("generation.jobs.generation_finished", task.pk)]


def test_hand_back_and_fail_over_return_the_task_to_the_queue(task, catalog):
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    transitions.claim(task.pk, owner="a")
    task.refresh_from_db()
    transitions.start(task, owner="a")
    old_prompt = task.prompt_id
    TaskPreview.objects.create(task=task, image=b"x")
    assert transitions.fail_over(task, owner="a", reason="gone")
    row = reload(task)
    assert row.status == TaskStatus.PENDING and row.backend_id is None and row.submitted_at is None
    assert row.prompt_id != old_prompt and row.waiting_since and row.status_message == "gone"
    assert not TaskPreview.objects.filter(task=task).exists()

    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    transitions.claim(task.pk, owner="b")
    task.refresh_from_db()
    waiting_since = task.waiting_since
    assert transitions.hand_back(task, owner="b", reason="unreachable")
    row = reload(task)
    assert row.backend_id is None and row.prompt_id == task.prompt_id and row.waiting_since == waiting_since


def test_cancel_then_retry_runs_again_under_a_new_prompt_id(task, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert transitions.cancel(task)
    assert not transitions.cancel(task)
    assert queued == [("generation.jobs.generation_finished", task.pk)]
    old_prompt = reload(task).prompt_id
    GenerationTask.objects.filter(pk=task.pk).update(waiting_since=timezone.now() - timedelta(hours=1))
    assert transitions.retry(task)
    assert not transitions.retry(task)  # pending now
    row = reload(task)
    assert row.status == TaskStatus.PENDING and row.retries == 1 and row.prompt_id != old_prompt
    assert row.completed_at is None and row.waiting_since is None and row.attempts == 0


def test_give_up_waiting_only_for_a_task_without_a_backend(task, catalog, queued, django_capture_on_commit_callbacks):
    transitions.assign(task.pk, backend_id=catalog["backend"].pk)
    assert not transitions.give_up_waiting(task.pk, code="backend_unreachable", message="no")
    GenerationTask.objects.filter(pk=task.pk).update(backend=None)
    with django_capture_on_commit_callbacks(execute=True):
        assert transitions.give_up_waiting(task.pk, code="backend_unreachable", message="no")
    assert reload(task).status == TaskStatus.FAILED
    assert queued == [("generation.jobs.generation_finished", task.pk)]


# --- the other shared rules, each in its one home ------------------------------------


def test_parameter_limits_report_every_problem_at_once(settings):
    from generation.limits import MAX_SEED, parameter_errors, ranges

    settings.EASEL_MAX_STEPS = 50
    errors = parameter_errors({"prompt": "", "width": 100, "height": 4096, "steps": 51, "cfg": 31,
                               "sampler": "nope", "scheduler": "nope", "batch_size": 0, "seed": MAX_SEED + 1,
                               "denoise": 1.5})
    assert set(errors) == {"prompt", "width", "height", "steps", "cfg", "sampler", "scheduler", "batch_size",
                           "seed", "denoise"}
    assert parameter_errors({"prompt": "ok", "width": 512, "steps": 50, "seed": 0, "denoise": None}) == {}
    assert ranges()["steps"].high == 50  # read when asked: a changed setting applies at once


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("", False), (None, False), ("no", False),
])
def test_query_flags_read_one_way(value, expected):
    from generation.gallery.files import query_flag

    assert query_flag(value) is expected


def test_one_map_of_content_types_and_extensions():
    from generation.media_types import content_type_for, extension_for

    assert extension_for("image/jpeg") == "jpg" and extension_for("image/png") == "png"
    assert extension_for("image/gif", default="") == ""
    assert content_type_for("JPEG") == "image/jpeg" and content_type_for("WEBP") == "image/webp"
