"""A VolcEngine backend in the fleet: staff add it in the admin (its secret write-only), its models become
checkpoints, and a task for one of them is submitted once, polled and stored like any other, against the stand-in
on a real port driven by the official SDK. The run happens in this process (no qcluster: nothing else may take the
task), as in test_fleet_edges."""
from __future__ import annotations

import threading

import pytest
from django.db import connections
from PIL import Image

from generation.fleet.dispatch import dispatch
from generation.fleet.runner import TaskRunner, task_claim, task_run
from generation.models import GenerationTask
from generation.services import generation_create
from models_catalog.models import Checkpoint, ComfyBackend
from models_catalog.services import backend_check, volc_models_apply
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

BACKENDS_URL = "/admin/models_catalog/comfybackend/"


@pytest.fixture
def volc_backend(transactional_db, volc_standin, no_cluster):
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    backend = ComfyBackend.objects.create(
        name="volc", kind=ComfyBackend.KIND_VOLCENGINE, base_url=volc_standin.url,
        access_key_id=volc_standin.access_key_id, secret_access_key=volc_standin.secret_access_key,
        offered_models=["jimeng_t2i_v31"], requests_per_second=20, max_in_flight=4)
    volc_models_apply(backend=backend)
    assert backend_check(backend=backend)
    return backend


def assigned(make_user, **params) -> GenerationTask:
    user = make_user(max_concurrent_tasks=5)
    task = generation_create(user=user, prompt="a lighthouse at dusk", model_name="jimeng_t2i_v31",
                             width=params.pop("width", 512), height=params.pop("height", 768), **params)
    dispatch(probe=False)
    task.refresh_from_db()
    assert task.backend_id is not None
    return task


def test_its_models_become_checkpoints_on_it(volc_backend):
    checkpoint = Checkpoint.objects.get(ckpt_name="jimeng_t2i_v31")
    assert checkpoint.enabled and checkpoint.display_name == "Jimeng 3.1"
    assert list(checkpoint.backends.all()) == [volc_backend]
    volc_backend.offered_models = []
    volc_backend.save()
    volc_models_apply(backend=volc_backend)
    assert not checkpoint.backends.exists()


def test_the_health_check_tells_a_wrong_key(volc_backend):
    volc_backend.secret_access_key = "wrong"
    assert not backend_check(backend=volc_backend)
    volc_backend.refresh_from_db()
    assert not volc_backend.is_online and "SignatureDoesNotMatch" in volc_backend.last_error


def test_a_task_is_submitted_once_polled_and_stored(volc_backend, volc_standin, make_user, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    task = assigned(make_user, seed=42)
    task_run(task_id=task.pk)
    assert volc_standin.secret_access_key not in caplog.text  # never logged, even at DEBUG
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert task.provider_task_id.isdigit() and task.rendered_prompt["req_key"] == "jimeng_t2i_v31"
    [image] = task.images.all()
    with image.file.open("rb") as handle:
        assert Image.open(handle).size == (512, 768)
    assert image.thumbnail
    assert volc_standin.stats()["submissions"] == 1


def test_a_restart_mid_poll_resumes_without_a_second_submit(volc_backend, volc_standin, make_user):
    volc_standin.faults(generate_seconds=3)
    task = assigned(make_user)
    stop = threading.Event()
    owner = "first-pump"
    claimed = task_claim(task_id=task.pk, owner=owner)

    def run():
        try:
            TaskRunner(claimed, owner, stop=stop).run()
        finally:
            connections.close_all()

    job = threading.Thread(target=run)
    job.start()
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).provider_task_id, timeout=20,
             message="the provider's task id to be stored")
    stop.set()  # the pump ends (a restart): the runner hands over mid-poll
    job.join(20)
    assert not job.is_alive()
    from generation import transitions
    transitions.release(task.pk, owner=owner)
    task_run(task_id=task.pk)  # the next pump
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert volc_standin.stats()["submissions"] == 1


def test_a_submit_whose_answer_was_lost_is_never_sent_again(volc_backend, volc_standin, make_user, settings):
    settings.EASEL_VOLCENGINE_HTTP_TIMEOUT = 0.5
    volc_standin.faults(delay=1.5)
    task = assigned(make_user)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "submit_unconfirmed")
    # The stand-in did take it (its answer was only late): sending it again would have run it twice.
    wait_for(lambda: volc_standin.stats()["submissions"] == 1, timeout=5, message="the late submit to land")


@pytest.mark.parametrize("fault, code, words", [
    ({"refuse_prompt_next": True}, "content_refused", "content moderation refused the prompt"),
    ({"quota_next": True}, "provider_quota", "no quota left"),
    ({"refuse_output_next": True}, "content_refused", "refused the generated picture"),
    # (A task VolcEngine lost, expired or not found, is sent again: test_volcengine_failover.)
])
def test_refusals_become_clear_task_messages(volc_backend, volc_standin, make_user, fault, code, words):
    volc_standin.faults(**fault)
    task = assigned(make_user)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", code)
    assert words in task.error_message


def test_transient_errors_are_retried_within_the_timeout(volc_backend, volc_standin, make_user):
    volc_standin.faults(throttle_next=True, server_error_next=2)
    task = assigned(make_user)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.error_message)
    assert volc_standin.stats()["submissions"] == 1


def test_what_the_model_cannot_make_is_refused_at_create_time(volc_backend, volc_standin, make_user,
                                                                api_client_for):
    client = api_client_for(make_user("asker", max_concurrent_tasks=2))
    response = client.post("/api/v1/generation/create-async", {
        "prompt": "x", "model_name": "jimeng_t2i_v31", "width": 256, "height": 4096, "batch_size": 2},
        format="json")
    assert response.status_code == 400
    body = response.json()
    assert "Jimeng 3.1 makes pictures from 512 to 2048 pixels a side." in str(body)
    assert "makes one picture per task" in str(body)
    assert not GenerationTask.objects.exists()


def test_a_size_the_model_cannot_make_fails_on_the_field_at_run_time_too(volc_backend, volc_standin, make_user):
    # (The model's limits may have changed since the task was created.)
    task = assigned(make_user)
    GenerationTask.objects.filter(pk=task.pk).update(width=256, height=256)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert (task.status, task.error_code) == ("failed", "invalid_parameters")
    assert set(task.error_fields) == {"width", "height"}
    assert volc_standin.stats()["submissions"] == 0


# --- the admin ------------------------------------------------------------------------------------------------------

@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


def test_staff_add_a_volcengine_backend_and_its_secret_is_never_shown_again(
        staff_client, volc_standin, transactional_db, no_cluster):
    secret = volc_standin.secret_access_key
    form = {"name": "cloud", "kind": "volcengine", "base_url": volc_standin.url, "enabled": "on",
            "max_in_flight": 2, "region": "cn-north-1", "access_key_id": volc_standin.access_key_id,
            "secret_access_key": secret, "requests_per_second": 2, "offered_models": ["jimeng_t2i_v40"]}
    response = staff_client.post(BACKENDS_URL + "add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    backend = ComfyBackend.objects.get(name="cloud")
    assert backend.secret_access_key == secret and backend.is_volcengine
    assert list(Checkpoint.objects.filter(backends=backend).values_list("ckpt_name", flat=True)) == ["jimeng_t2i_v40"]
    page = staff_client.get(BACKENDS_URL + f"{backend.pk}/change/").content.decode()
    assert secret not in page and "saved" in page
    assert secret not in staff_client.get(BACKENDS_URL).content.decode()
    # Saved again without typing it: the secret stays.
    form["secret_access_key"] = ""
    assert staff_client.post(BACKENDS_URL + f"{backend.pk}/change/", form).status_code == 302
    backend.refresh_from_db()
    assert backend.secret_access_key == secret
    assert backend_check(backend=backend), backend.last_error
    form["forget_secret"] = "on"
    staff_client.post(BACKENDS_URL + f"{backend.pk}/change/", form)
    backend.refresh_from_db()
    assert backend.secret_access_key == ""


def test_a_volcengine_backend_needs_a_model_and_a_key(staff_client, transactional_db, no_cluster):
    response = staff_client.post(BACKENDS_URL + "add/", {
        "name": "cloud", "kind": "volcengine", "base_url": "https://visual.volcengineapi.com", "max_in_flight": 2,
        "requests_per_second": 1})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "offered_models" in errors and "access_key_id" in errors
    assert not ComfyBackend.objects.filter(name="cloud").exists()


def test_a_user_picks_the_model_on_the_generate_page_and_gets_a_stored_picture(
        volc_backend, volc_standin, client, make_user):
    from django.urls import reverse

    client.force_login(make_user("painter", max_concurrent_tasks=2))
    page = client.get(reverse("generation:generate")).content.decode()
    assert "Jimeng 3.1" in page
    response = client.post(reverse("generation:generate"), {
        "prompt": "a lighthouse at dusk", "negative_prompt": "", "model": "jimeng_t2i_v31", "size": "custom",
        "width": "512", "height": "512", "steps": "20", "cfg": "7", "sampler": "euler", "scheduler": "normal",
        "seed": "5", "batch_size": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    task = GenerationTask.objects.get(user__username="painter")
    dispatch(probe=False)
    task_run(task_id=task.pk)
    task.refresh_from_db()
    assert task.status == "completed" and task.images.count() == 1
    assert volc_standin.stats()["submissions"] == 1


def test_a_cancel_mid_poll_stops_the_run_and_stores_nothing(volc_backend, volc_standin, make_user):
    from generation.services import generation_cancel

    volc_standin.faults(generate_seconds=3)
    task = assigned(make_user)
    job = threading.Thread(target=lambda: (task_run(task_id=task.pk), connections.close_all()))
    job.start()
    wait_for(lambda: GenerationTask.objects.get(pk=task.pk).provider_task_id, timeout=20,
             message="the provider's task id to be stored")
    generation_cancel(task=GenerationTask.objects.get(pk=task.pk))
    job.join(20)
    assert not job.is_alive()
    task.refresh_from_db()
    assert task.status == "cancelled" and task.images.count() == 0
    assert volc_standin.stats()["submissions"] == 1


def test_the_doctor_speaks_of_a_volcengine_backend(volc_backend):
    from generation.ops.doctor import BACKEND_CHECK, check_backends

    [check] = [c for c in check_backends(probe=True) if c.name == f"{BACKEND_CHECK}volc"]
    assert check.level == "ok" and "VolcEngine" in check.message
    volc_backend.secret_access_key = "wrong"
    volc_backend.save()
    [check] = [c for c in check_backends(probe=True) if c.name == f"{BACKEND_CHECK}volc"]
    assert check.level == "error" and "VolcEngine endpoint" in check.fix
