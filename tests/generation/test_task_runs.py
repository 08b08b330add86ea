"""Every attempt recorded: each transition opens or ends the task's TaskRun, fail-overs and
retries keep each other's history, and the admin, the task page and the API show it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from generation import transitions
from generation.models import GenerationTask, RunEnd, RunOutcome, TaskRun, TaskStatus
from generation.task_text import text
from models_catalog.models import ComfyBackend
from tests.conftest import free_port, wait_for

ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
GONE = "Backend %(name)s went away; moved back to the queue."


@pytest.fixture
def queued(monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: None)


@pytest.fixture
def backends(catalog):
    second = ComfyBackend.objects.create(name="gpu-1", base_url=f"http://127.0.0.1:{free_port()}")
    catalog["backend"].name = "gpu-2"
    catalog["backend"].save()
    return catalog["backend"], second


@pytest.fixture
def task(make_user, catalog, queued):
    return GenerationTask.objects.create(
        user=make_user("mei"), prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1,
    )


def runs(task) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task_id=task.pk).order_by("number"))


def on(task, backend, owner="job") -> GenerationTask:
    """Assigned, claimed and started on the backend, as the run machinery does it."""
    assert transitions.assign(task.pk, backend_id=backend.pk)
    assert transitions.claim(task.pk, owner=owner)
    row = GenerationTask.objects.get(pk=task.pk)
    assert transitions.start(row, owner=owner)
    return row


# --- each transition --------------------------------------------------------------------


@pytest.mark.django_db
def test_assign_opens_a_run_and_start_stamps_it_once(task, backends):
    gpu2, _ = backends
    assert runs(task) == []  # waiting in Easel's queue is not an attempt
    assert transitions.assign(task.pk, backend_id=gpu2.pk)
    [run] = runs(task)
    task.refresh_from_db()
    assert (run.number, run.backend_id, run.backend_name, run.outcome) == (1, gpu2.pk, "gpu-2", RunOutcome.RUNNING)
    assert run.prompt_id == task.prompt_id and run.assigned_at == task.assigned_at
    assert run.submitted_at is None and run.started_at is None and run.ended_by == ""
    assert not transitions.assign(task.pk, backend_id=gpu2.pk)  # no second run for a refused assign
    assert len(runs(task)) == 1

    transitions.claim(task.pk, owner="a")
    row = GenerationTask.objects.get(pk=task.pk)
    when = timezone.now()
    assert transitions.start(row, owner="a", now=when)
    [run] = runs(task)
    assert run.submitted_at == when and run.started_at == when and run.outcome == RunOutcome.RUNNING
    # A job taking over a lapsed lease follows the same prompt: the same run goes on.
    GenerationTask.objects.filter(pk=task.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert transitions.claim(task.pk, owner="b")
    row = GenerationTask.objects.get(pk=task.pk)
    assert transitions.start(row, owner="b", now=when + timedelta(seconds=30))
    [run] = runs(task)
    assert run.started_at == when


@pytest.mark.django_db
def test_complete_ends_the_run_as_completed(task, backends):
    row = on(task, backends[0])
    assert transitions.complete(row, owner="job")
    [run] = runs(task)
    row.refresh_from_db()
    assert (run.outcome, run.ended_by, run.ended_at) == (RunOutcome.COMPLETED, RunEnd.COMPLETION, row.completed_at)
    assert run.error_message == ""


@pytest.mark.django_db
def test_fail_keeps_the_error_translatable_and_a_time_limit_is_timed_out(task, backends, make_user, catalog):
    row = on(task, backends[0])
    assert transitions.fail(row, owner="job", code="execution_error",
                            message=text("The backend interrupted this generation."))
    [run] = runs(task)
    assert (run.outcome, run.ended_by, run.error_code) == (RunOutcome.FAILED, RunEnd.FAILURE, "execution_error")
    assert run.error_params["msgid"] == "The backend interrupted this generation."

    other = GenerationTask.objects.create(
        user=task.user, prompt="slow", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1,
    )
    row = on(other, backends[0])
    assert transitions.fail(row, owner="job", code="timeout", message=text("Timed out after %(n)d s.", n=120))
    [run] = runs(other)
    assert (run.outcome, run.ended_by) == (RunOutcome.TIMED_OUT, RunEnd.TIMEOUT)
    assert run.error_message == "Timed out after 120 s."
    # Another job's failure, once the task is no longer its, ends nothing.
    assert not transitions.fail(row, owner="job", code="x", message="late")
    assert runs(other)[0].error_message == "Timed out after 120 s."


@pytest.mark.django_db
def test_cancel_ends_the_open_run_and_a_waiting_task_has_none(task, backends, catalog):
    row = on(task, backends[0])
    assert transitions.cancel(row)
    [run] = runs(task)
    assert (run.outcome, run.ended_by) == (RunOutcome.CANCELLED, RunEnd.CANCEL)
    assert run.started_at is not None

    waiting = GenerationTask.objects.create(
        user=task.user, prompt="never ran", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1,
    )
    assert transitions.cancel(waiting.pk)
    assert runs(waiting) == []


@pytest.mark.django_db
def test_hand_back_and_fail_over_move_the_task_and_the_next_run_is_its_own(task, backends):
    gpu2, gpu1 = backends
    transitions.assign(task.pk, backend_id=gpu2.pk)
    transitions.claim(task.pk, owner="a")
    row = GenerationTask.objects.get(pk=task.pk)
    reason = text("Waiting: backend %(name)s is unreachable.", name="gpu-2")
    assert transitions.hand_back(row, owner="a", reason=reason)
    [first] = runs(task)
    assert (first.outcome, first.ended_by, first.started_at) == (RunOutcome.MOVED, RunEnd.HAND_BACK, None)
    assert first.error_message == "Waiting: backend gpu-2 is unreachable."

    row = on(task, gpu2, owner="b")
    old_prompt = row.prompt_id
    assert transitions.fail_over(row, owner="b", reason=text(GONE, name="gpu-2"))
    row = on(task, gpu1, owner="c")
    assert transitions.complete(row, owner="c")

    first, second, third = runs(task)
    assert first.outcome == RunOutcome.MOVED and first.ended_by == RunEnd.HAND_BACK  # untouched since
    assert (second.number, second.backend_name, second.outcome, second.ended_by) == (
        2, "gpu-2", RunOutcome.MOVED, RunEnd.FAIL_OVER)
    assert second.prompt_id == old_prompt and second.started_at is not None
    assert (third.number, third.backend_name, third.outcome) == (3, "gpu-1", RunOutcome.COMPLETED)
    # The new run is under the new prompt id, and starts when it started, not at the first start.
    row.refresh_from_db()
    assert third.prompt_id == row.prompt_id != old_prompt
    assert third.started_at >= second.ended_at
    assert [r.summary for r in (second, third)] == [
        "Ran on gpu-2, moved after gpu-2 went away.", "Finished on gpu-1."]


@pytest.mark.django_db
def test_retry_keeps_the_failed_run_and_opens_a_new_one(task, backends):
    gpu2, gpu1 = backends
    row = on(task, gpu2)
    transitions.fail(row, owner="job", code="execution_error", message="CUDA out of memory")
    assert transitions.retry(row)
    assert runs(task)[0].outcome == RunOutcome.FAILED  # not overwritten by the retry
    on(task, gpu1, owner="again")
    first, second = runs(task)
    assert (first.outcome, first.error_message) == (RunOutcome.FAILED, "CUDA out of memory")
    assert (second.number, second.backend_name, second.outcome) == (2, "gpu-1", RunOutcome.RUNNING)


@pytest.mark.django_db
def test_a_run_left_open_ends_as_retried_or_lost(task, backends):
    gpu2, gpu1 = backends
    transitions.assign(task.pk, backend_id=gpu2.pk)
    # A task that ended without its run being closed (written before runs existed).
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED)
    assert transitions.retry(task.pk)
    [run] = runs(task)
    assert (run.outcome, run.ended_by) == (RunOutcome.RETRIED, RunEnd.RETRY)

    # The backend is deleted under the next run: the run keeps its name; a new
    # assignment ends it as lost (by recovery) and opens the next.
    transitions.assign(task.pk, backend_id=gpu2.pk)
    gpu2.delete()
    second = runs(task)[1]
    assert second.backend_id is None and second.backend_name == "gpu-2" and second.outcome == RunOutcome.RUNNING
    GenerationTask.objects.filter(pk=task.pk).update(status=TaskStatus.PENDING)
    assert transitions.assign(task.pk, backend_id=gpu1.pk)
    _, second, third = runs(task)
    assert (second.outcome, second.ended_by) == (RunOutcome.LOST, RunEnd.RECOVERY)
    assert (third.number, third.outcome) == (3, RunOutcome.RUNNING)


@pytest.mark.django_db
def test_giving_up_waiting_records_no_run_but_ends_one_whose_backend_was_deleted(task, backends, catalog):
    assert transitions.give_up_waiting(task.pk, code="backend_unreachable", message="gone")
    assert runs(task) == []  # it never had a backend

    stranded = GenerationTask.objects.create(
        user=task.user, prompt="stranded", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1,
    )
    transitions.assign(stranded.pk, backend_id=backends[0].pk)
    backends[0].delete()  # the task is back to waiting, its run still open
    assert transitions.give_up_waiting(stranded.pk, code="backend_unreachable", message="gone")
    [run] = runs(stranded)
    assert (run.outcome, run.ended_by, run.backend_name) == (RunOutcome.LOST, RunEnd.RECOVERY, "gpu-2")
    assert run.summary == "Lost on gpu-2 (its backend was removed)."


@pytest.mark.django_db
def test_each_transition_costs_the_same_however_long_the_history(task, backends, django_assert_max_num_queries):
    gpu2, gpu1 = backends

    def round_trip(owner):
        row = on(task, gpu2 if len(owner) % 2 else gpu1, owner=owner)
        assert transitions.fail_over(row, owner=owner, reason=text(GONE, name="x"))

    round_trip("a")
    with django_assert_max_num_queries(30) as few:
        round_trip("bb")
    for i in range(20):
        round_trip(f"c{i}")
    with django_assert_max_num_queries(len(few)):
        round_trip("dd")
    assert len(runs(task)) == 23 and TaskRun.objects.filter(task=task, outcome=RunOutcome.RUNNING).count() == 0


# --- the data migration ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_each_task_that_had_a_backend_one_run_and_reverses(make_user, catalog):
    executor = MigrationExecutor(connection)
    before, after = [("generation", "0015_task_inputs")], [("generation", "0016_taskrun")]
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Task = apps.get_model("generation", "GenerationTask")
    user_id, backend = make_user("old").pk, catalog["backend"]
    now = timezone.now()
    base = dict(user_id=user_id, prompt="p", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7,
                sampler="euler", scheduler="normal", seed=1)
    made = {
        "waiting": Task.objects.create(**base),
        "running": Task.objects.create(**base, status="processing", backend_id=backend.pk, assigned_at=now,
                                       submitted_at=now, started_at=now),
        "done": Task.objects.create(**base, status="completed", backend_id=backend.pk, assigned_at=now,
                                    started_at=now, completed_at=now + timedelta(seconds=5)),
        "slow": Task.objects.create(**base, status="failed", backend_id=backend.pk, started_at=now,
                                    completed_at=now, error_code="timeout", error_message="Timed out after 9 s.",
                                    error_params={"msgid": "Timed out after %(n)d s.", "params": {"n": 9}}),
        "cancelled": Task.objects.create(**base, status="cancelled", backend_id=backend.pk, assigned_at=now,
                                         completed_at=now),
    }
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    Run = executor.loader.project_state(after).apps.get_model("generation", "TaskRun")
    got = {name: list(Run.objects.filter(task_id=t.pk).values(
        "number", "backend_name", "outcome", "ended_by", "ended_at", "started_at", "prompt_id", "error_message"))
        for name, t in made.items()}
    assert got["waiting"] == []
    assert got["running"][0]["outcome"] == "running" and got["running"][0]["ended_at"] is None
    assert got["running"][0]["prompt_id"] == made["running"].prompt_id
    assert got["done"] == [{"number": 1, "backend_name": backend.name, "outcome": "completed",
                            "ended_by": "completion", "ended_at": now + timedelta(seconds=5), "started_at": now,
                            "prompt_id": made["done"].prompt_id, "error_message": ""}]
    assert (got["slow"][0]["outcome"], got["slow"][0]["ended_by"]) == ("timed_out", "timeout")
    assert got["slow"][0]["error_message"] == "Timed out after 9 s."
    assert (got["cancelled"][0]["outcome"], got["cancelled"][0]["ended_by"]) == ("cancelled", "cancel")

    executor = MigrationExecutor(connection)
    executor.migrate(before)  # the reverse drops them
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Task.objects.filter(pk__in=[t.pk for t in made.values()]).count() == 5


# --- what people see -------------------------------------------------------------------


@pytest.fixture
def moved_task(task, backends):
    gpu2, gpu1 = backends
    row = on(task, gpu2, owner="a")
    transitions.fail_over(row, owner="a", reason=text(GONE, name="gpu-2"))
    row = on(task, gpu1, owner="b")
    transitions.complete(row, owner="b")
    return task


@pytest.fixture
def owner_client(client, moved_task):
    client.force_login(moved_task.user)
    return client


@pytest.mark.django_db
def test_the_task_page_tells_the_attempts_in_english_and_chinese(owner_client, moved_task):
    html = owner_client.get(f"/tasks/{moved_task.pk}/").content.decode()
    assert "Attempts" in html and "data-task-runs" in html
    assert "Ran on gpu-2, moved after gpu-2 went away." in html
    assert "Finished on gpu-1." in html
    assert html.index("Ran on gpu-2") < html.index("Finished on gpu-1")
    html = owner_client.get(f"/tasks/{moved_task.pk}/", **ZH).content.decode()
    assert "尝试记录" in html
    assert "在 gpu-2 上运行，gpu-2 失联后已转移。" in html
    assert "在 gpu-1 上完成。" in html
    assert "Ran on" not in html and "Attempts" not in html


@pytest.mark.django_db
def test_a_task_done_in_one_attempt_shows_no_attempts(client, task, backends):
    row = on(task, backends[0])
    transitions.complete(row, owner="job")
    client.force_login(task.user)
    html = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "data-task-runs" not in html


@pytest.mark.django_db
def test_the_status_api_lists_the_runs_in_the_readers_language(moved_task, api_client_for):
    client = api_client_for(moved_task.user)
    body = client.get(f"/api/v1/generation/status/{moved_task.pk}").json()
    first, second = body["runs"]
    assert set(first) == {"number", "backend", "submitted_at", "started_at", "ended_at", "outcome", "ended_by",
                          "error"}
    assert (first["number"], first["backend"], first["outcome"], first["ended_by"]) == (
        1, "gpu-2", "moved", "fail_over")
    assert first["error"] == "Backend gpu-2 went away; moved back to the queue."
    assert (second["backend"], second["outcome"], second["ended_by"], second["error"]) == (
        "gpu-1", "completed", "completion", None)
    assert body["status"] == "completed" and body["id"] == moved_task.pk  # the promised fields stay
    zh = client.get(f"/api/v1/generation/status/{moved_task.pk}", **ZH).json()
    assert zh["runs"][0]["error"] == "后端 gpu-2 已离开；任务已放回队列。"
    # Lists keep their shape and their query count: no runs there.
    assert "runs" not in client.get("/api/v1/generation/history").json()["results"][0]


@pytest.mark.django_db
def test_the_schema_documents_runs(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    detail = schema["components"]["schemas"]["TaskDetail"]
    assert "runs" in detail["properties"]
    run = schema["components"]["schemas"]["Run"]["properties"]
    assert set(run) == {"number", "backend", "submitted_at", "started_at", "ended_at", "outcome", "ended_by",
                        "error"}
    assert "RunOutcomeEnum" in schema["components"]["schemas"] and "RunEndEnum" in schema["components"]["schemas"]
    status = schema["paths"]["/api/v1/generation/status/{task_id}"]["get"]["responses"]["200"]
    assert status["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/TaskDetail"


@pytest.mark.django_db
def test_the_admin_task_page_lists_the_runs_in_english_and_chinese(client, make_user, moved_task):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    url = f"/admin/generation/generationtask/{moved_task.pk}/change/"
    html = client.get(url).content.decode()
    assert "Attempts" in html and "What happened" in html
    assert "Ran on gpu-2, moved after gpu-2 went away." in html and "fail-over" in html
    assert "Backend gpu-2 went away; moved back to the queue." in html
    html = client.get(url, **ZH).content.decode()
    assert "尝试记录" in html and "经过" in html
    assert "在 gpu-2 上运行，gpu-2 失联后已转移。" in html and "故障转移" in html
    assert "后端 gpu-2 已离开；任务已放回队列。" in html


# --- end to end: a backend dies mid-run ------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_backend_killed_mid_run_leaves_two_runs_moved_then_completed(make_engine, qcluster, make_user,
                                                                       api_client_for):
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, WorkflowTemplate
    from models_catalog.services import backend_ensure, checkpoints_sync

    ensure_builtin_templates(WorkflowTemplate)
    dying, healthy = make_engine(), make_engine()
    dying_backend = backend_ensure(name="gpu-2", base_url=dying.url)
    checkpoints_sync(backends=[dying_backend])
    Checkpoint.objects.update(default_steps=6, default_width=64, default_height=64)
    dying.faults(die_at_step=2, step_delay=0.3)
    client = api_client_for(make_user("fleet", max_concurrent_tasks=5, daily_image_quota=100))
    response = client.post("/api/v1/generation/create-async", {"prompt": "a lighthouse", "model_name": "demo-sd15"},
                           format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    # Only once it runs on gpu-2 does the second backend come: it is where the task moves.
    wait_for(lambda: TaskRun.objects.filter(task_id=task_id, started_at__isnull=False).exists(), timeout=60,
             message="the task to start on gpu-2")
    healthy.faults(step_delay=0.05)
    checkpoints_sync(backends=[backend_ensure(name="gpu-1", base_url=healthy.url)])
    wait_for(lambda: dying.proc.poll() is not None, timeout=30, message="the engine to die")

    def finished():
        body = client.get(f"/api/v1/generation/status/{task_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled") else None

    body = wait_for(finished, timeout=120, interval=0.3, message="the task to finish")
    assert body["status"] == "completed", body
    first, second = body["runs"]
    assert (first["number"], first["backend"], first["outcome"], first["ended_by"]) == (
        1, "gpu-2", "moved", "fail_over")
    assert first["started_at"] and first["ended_at"]
    assert (second["number"], second["backend"], second["outcome"], second["ended_by"]) == (
        2, "gpu-1", "completed", "completion")
    first_row, second_row = TaskRun.objects.filter(task_id=task_id).order_by("number")
    assert first_row.prompt_id != second_row.prompt_id
    assert GenerationTask.objects.get(pk=task_id).prompt_id == second_row.prompt_id
