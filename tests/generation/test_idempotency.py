"""Idempotent creates: a client retrying a create with the same Idempotency-Key gets the
task its first try created, whatever the timing."""
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from generation.idempotency import idempotency_keys_expire
from generation.models import GenerationTask, IdempotencyKey, TaskStatus

pytestmark = pytest.mark.django_db

CREATE_ASYNC = "/api/v1/generation/create-async"
CREATE = "/api/v1/generation/create"
BODY = {"prompt": "a beautiful landscape", "model_name": "demo-sd15"}


def _post(client, path, body, key, **extra):
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **extra)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def test_a_retry_with_the_same_key_answers_the_first_task_and_charges_the_quota_once(
        catalog, make_user, api_client_for):
    user = make_user(daily_image_quota=1)
    client = api_client_for(user)
    first = _post(client, CREATE_ASYNC, BODY, "retry-1")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first
    # The same body with its keys reordered is the same request; the quota (1 image) is
    # already used, so a second charge would be a 429.
    again = _post(client, CREATE_ASYNC, {"model_name": "demo-sd15", "prompt": "a beautiful landscape"}, "retry-1")
    assert again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert again["Location"] == first["Location"]
    assert GenerationTask.objects.filter(user=user).count() == 1
    assert client.get("/api/v1/quota").json()["used"] == 1
    # A new key is a new request: the quota refuses it.
    _error(_post(client, CREATE_ASYNC, BODY, "retry-2"), 429, "quota_exceeded")


def test_a_replay_shows_the_task_as_it_is_now(catalog, make_user, api_client_for, settings):
    settings.EASEL_CREATE_WAIT_SECONDS = 0
    user = make_user()
    client = api_client_for(user)
    first = _post(client, CREATE, BODY, "k")
    assert first.status_code == 202 and first.json()["status"] == "pending"
    GenerationTask.objects.filter(pk=first.json()["id"]).update(status=TaskStatus.FAILED, error_message="boom")
    # The waiting create answers 200 for a finished task, as a first request would now.
    again = _post(client, CREATE, BODY, "k")
    assert again.status_code == 200 and again.json()["status"] == "failed" and again["Idempotent-Replayed"] == "true"
    # create-async with the same key and body is the same request: 202 with the task as it is.
    async_again = _post(client, CREATE_ASYNC, BODY, "k")
    assert async_again.status_code == 202 and async_again.json()["id"] == first.json()["id"]
    assert async_again.json()["status"] == "failed"


def test_the_same_key_with_another_body_is_refused(catalog, make_user, api_client_for):
    user = make_user()
    client = api_client_for(user)
    assert _post(client, CREATE_ASYNC, BODY, "same").status_code == 202
    error = _error(_post(client, CREATE_ASYNC, {**BODY, "prompt": "a stormy sea"}, "same"), 422,
                   "idempotency_key_reused")
    assert "Idempotency-Key" in error["message"]
    assert GenerationTask.objects.filter(user=user).count() == 1


def test_keys_are_per_user(catalog, make_user, api_client_for):
    ann, bob = api_client_for(make_user()), api_client_for(make_user())
    a = _post(ann, CREATE_ASYNC, BODY, "shared-key")
    b = _post(bob, CREATE_ASYNC, {**BODY, "prompt": "other"}, "shared-key")
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b


@pytest.mark.parametrize("key", ["", "  ", '""', "x" * 256, "clé"])
def test_an_empty_or_too_long_key_is_a_400(catalog, make_user, api_client_for, key):
    client = api_client_for(make_user())
    # The test client sends header values as given (latin-1 for the accented one).
    _error(_post(client, CREATE_ASYNC, BODY, key), 400, "idempotency_key_invalid")
    assert not GenerationTask.objects.exists()


def test_a_quoted_key_and_the_longest_key_are_taken(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    quoted = _post(client, CREATE_ASYNC, BODY, '"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    bare = _post(client, CREATE_ASYNC, BODY, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert bare.json()["id"] == quoted.json()["id"] and bare["Idempotent-Replayed"] == "true"
    assert _post(client, CREATE_ASYNC, BODY, "y" * 255).status_code == 202


def test_a_refused_create_keeps_no_key_so_the_fixed_request_may_reuse_it(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    refused = _post(client, CREATE_ASYNC, {**BODY, "width": 99}, "fix-me")
    assert refused.status_code == 400 and not IdempotencyKey.objects.exists()
    assert _post(client, CREATE_ASYNC, BODY, "fix-me").status_code == 202


def test_without_a_key_every_create_is_new(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    ids = {client.post(CREATE_ASYNC, BODY, format="json").json()["id"] for _ in range(2)}
    assert len(ids) == 2 and not IdempotencyKey.objects.exists()


def test_keys_are_kept_24_hours(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    first = _post(client, CREATE_ASYNC, BODY, "day-old").json()["id"]
    kept = _post(client, CREATE_ASYNC, BODY, "kept").json()["id"]
    IdempotencyKey.objects.filter(key="day-old").update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    # An expired key is a new request, even before the daily sweep.
    second = _post(client, CREATE_ASYNC, {**BODY, "prompt": "another"}, "day-old")
    assert second.status_code == 202 and second.json()["id"] != first
    IdempotencyKey.objects.filter(key="kept").update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_keys_expire() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["day-old"]
    assert GenerationTask.objects.filter(pk=kept).exists()  # the sweep forgets keys, never tasks


def test_deleting_the_task_forgets_its_key(catalog, make_user, api_client_for):
    client = api_client_for(make_user())
    task_id = _post(client, CREATE_ASYNC, BODY, "gone").json()["id"]
    assert client.delete(f"/api/v1/generation/{task_id}").status_code == 204
    assert not IdempotencyKey.objects.exists()


def test_the_daily_schedule_exists():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="easel-idempotency-keys")
    assert schedule.func == "generation.jobs.idempotency_keys_expire" and schedule.schedule_type == "D"
    from generation import jobs

    assert callable(jobs.idempotency_keys_expire)


def test_both_creates_document_the_header(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/generation/create", "/api/v1/generation/create-async"):
        operation = schema["paths"][path]["post"]
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
        assert "Idempotency-Key" in names, names
        assert "422" in operation["responses"]


@pytest.mark.django_db(transaction=True)
def test_two_racing_requests_with_one_key_create_one_task(catalog, make_user, api_client_for):
    """PostgreSQL: both requests are in flight at once (a third session holds the user's
    row, so the first create stops inside its transaction); the second waits on the key
    and answers the first one's task."""
    from django.contrib.auth import get_user_model
    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time: no two creates overlap")
    user = make_user()
    clients = [api_client_for(user), api_client_for(user)]
    holding, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            get_user_model().objects.select_for_update().get(pk=user.pk)
            holding.set()
            release.wait(30)
        connections.close_all()

    answers = [None, None]

    def post(i):
        answers[i] = _post(clients[i], CREATE_ASYNC, BODY, "race")
        connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    racers = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    try:
        for racer in racers:
            racer.start()

        def waiting_sessions() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                return cursor.fetchone()[0]

        deadline = time.monotonic() + 20
        while waiting_sessions() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # One create waits for the user's row, the other for the first one's key.
        assert waiting_sessions() == 2
    finally:
        release.set()
        holder.join()
        for racer in racers:
            racer.join(30)
    assert [a.status_code for a in answers] == [202, 202], [a.content for a in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert sorted(a.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    assert GenerationTask.objects.filter(user=user).count() == 1
    assert IdempotencyKey.objects.get(user=user, key="race").task_id == answers[0].json()["id"]
