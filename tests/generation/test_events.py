"""GET /api/v1/events: each user's task events as Server-Sent Events, served by the web
process as deployed (gunicorn with deploy/gunicorn.conf.py: uvicorn's worker, config.asgi)
on the test database, read by a real HTTP client as a browser's EventSource would."""
from __future__ import annotations

import json
import queue
import socket
import threading
import time

import pytest
import requests

from tests.conftest import Web, api_create, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def web(transactional_db):
    server = Web().start()
    yield server
    server.stop()


class Stream:
    """An EventSource-like reader in a thread: events (id, kind, data) and comments."""

    def __init__(self, url: str, *, headers=None, cookies=None):
        self.response = requests.get(f"{url}/api/v1/events", headers={"Accept": "text/event-stream", **(headers or {})},
                                     cookies=cookies, stream=True, timeout=(5, 30))
        self.events: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.comments = 0
        self.retry = None
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = ""
        event: dict = {}
        try:
            for chunk in self.response.iter_content(chunk_size=None, decode_unicode=True):
                buffer += chunk
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    if line == "":
                        if "data" in event:
                            event["data"] = json.loads(event["data"])
                            self.events.put(event)
                        event = {}
                    elif line.startswith(":"):
                        self.comments += 1
                    else:
                        name, _, value = line.partition(": ")
                        if name == "retry":
                            self.retry = int(value)
                        elif name in ("id", "event", "data"):
                            event[name] = value
        except (requests.RequestException, ValueError, AttributeError):
            pass
        self.events.put(None)

    def until(self, predicate, timeout: float = 60) -> list[dict]:
        """Read events until one satisfies `predicate`; every event read so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"the stream ended; events: {self.seen}")
            self.seen.append(event)
            if predicate(event):
                return self.seen
        raise AssertionError(f"no such event within {timeout} s; events: {self.seen}")

    def quiet_for(self, seconds: float) -> list[dict]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                event = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is not None:
                self.seen.append(event)
        return self.seen

    def close(self):
        # Shut the socket first: the reader thread holds the response's buffer while it
        # waits for the next event, and a plain close would wait for it.
        try:
            self.response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.response.close()


def _token(user) -> str:
    from accounts.services import token_create

    return token_create(user=user)[1]


def _bearer(user) -> dict:
    return {"Authorization": f"Bearer {_token(user)}"}


def _task(user, catalog, **extra):
    """A stored task as generation_create leaves it (its `created` event included)."""
    from django.db import transaction

    from generation import transitions
    from generation.models import GenerationTask

    with transaction.atomic():
        task = GenerationTask.objects.create(
            user=user, prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
            width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1, **extra)
        transitions.created(task)
    return task


def _of(events, task_id):
    return [e for e in events if e["data"]["task_id"] == task_id]


def test_a_task_run_to_completion_is_streamed_in_order(engine_catalog, qcluster, web, make_user, api_client_for):
    user = make_user()
    stream = Stream(web.url, headers=_bearer(user))  # token auth, as app clients
    assert stream.response.status_code == 200
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    [task_id] = api_create(api_client_for(user), 1, steps=20)
    events = _of(stream.until(lambda e: e["event"] in ("completed", "failed") and e["data"]["task_id"] == task_id),
                 task_id)
    stream.close()
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["created", "queued", "started"], kinds
    assert kinds[-1] == "completed", kinds
    assert set(kinds[3:-1]) <= {"progress", "preview"}, kinds
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert progress and all(p["max"] > 0 for p in progress), kinds
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)
    assert events[1]["data"]["position"] in (None, 1)
    assert stream.retry and stream.retry > 0
    for preview in (e["data"] for e in events if e["event"] == "preview"):
        assert preview["url"].startswith(f"{web.url}/api/v1/generation/preview/{task_id}")
    # The images as the status endpoint gives them (ids and URLs, not bytes).
    status = requests.get(f"{web.url}/api/v1/generation/status/{task_id}", headers=_bearer(user), timeout=10).json()
    done = events[-1]["data"]
    assert done["images"] == status["images"] and done["result_id"] == status["result_id"]
    image = requests.get(done["images"][0]["url"], headers=_bearer(user), timeout=10)
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"


def test_a_reconnect_with_last_event_id_gets_the_ending_it_missed(web, make_user, catalog):
    from generation import transitions
    from generation.task_text import text

    user = make_user()
    headers = _bearer(user)
    stream = Stream(web.url, headers=headers)
    task = _task(user, catalog)
    seen = stream.until(lambda e: e["event"] == "queued")
    stream.close()  # the connection drops (a train goes into a tunnel)…
    transitions.give_up_waiting(task, code="unreachable", message=text("No image server could run this task."))
    other = _task(user, catalog)
    transitions.cancel(other)
    # …and the client reconnects, as EventSource does, with the last id it got.
    again = Stream(web.url, headers={**headers, "Last-Event-ID": seen[-1]["id"]})
    events = again.until(lambda e: e["event"] == "cancelled")
    again.close()
    assert [(e["event"], e["data"]["task_id"]) for e in events] == [
        ("failed", task.pk), ("created", other.pk), ("queued", other.pk), ("cancelled", other.pk)]
    failed = events[0]["data"]
    assert failed["code"] == "unreachable" and failed["message"] == "No image server could run this task."
    assert "message_params" not in failed
    assert int(events[0]["id"]) > int(seen[-1]["id"])


def test_the_failure_message_is_in_the_readers_language(web, make_user, catalog):
    from generation import transitions
    from generation.task_text import text

    user = make_user()
    task = _task(user, catalog)
    # A message of the studio's own (recovery's), stored as its id and parameters.
    transitions.give_up_waiting(task, code="backend_unreachable", message=text(
        "Backend unreachable: no backend could run this task for %(n)d s.", n=120))
    stream = Stream(web.url, headers={**_bearer(user), "Accept-Language": "zh-hans", "Last-Event-ID": "0"})
    [*_, failed] = stream.until(lambda e: e["event"] == "failed")
    stream.close()
    assert failed["data"]["message"] != "Backend unreachable: no backend could run this task for 120 s."
    assert "120" in failed["data"]["message"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in failed["data"]["message"]), failed


def test_another_users_events_never_appear(web, make_user, catalog):
    from generation import transitions

    alice, bob = make_user(), make_user()
    alice_stream = Stream(web.url, headers=_bearer(alice))
    bob_stream = Stream(web.url, headers=_bearer(bob))
    bobs = _task(bob, catalog)
    transitions.cancel(bobs)
    alices = _task(alice, catalog)
    transitions.cancel(alices)
    got = alice_stream.until(lambda e: e["event"] == "cancelled")
    bob_stream.until(lambda e: e["event"] == "cancelled")
    got = alice_stream.quiet_for(1.0)
    assert {e["data"]["task_id"] for e in got} == {alices.pk}
    # Nor when asking for everything from the start.
    replay = Stream(web.url, headers={**_bearer(alice), "Last-Event-ID": "0"})
    replayed = replay.until(lambda e: e["event"] == "cancelled")
    assert {e["data"]["task_id"] for e in replay.quiet_for(0.5)} == {alices.pk}, replayed
    for stream in (alice_stream, bob_stream, replay):
        stream.close()


def test_credentials_are_required_and_a_session_works(web, make_user, catalog, client):
    anonymous = requests.get(f"{web.url}/api/v1/events", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    wrong = requests.get(f"{web.url}/api/v1/events", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "authentication_failed"
    bad = requests.get(f"{web.url}/api/v1/events?last_event_id=x", headers=_bearer(make_user()), timeout=10)
    assert bad.status_code == 400 and "last_event_id" in bad.json()["error"]["fields"]
    # The pages' way in: the session cookie of a signed-in browser.
    user = make_user()
    client.force_login(user)
    stream = Stream(web.url, cookies={"sessionid": client.cookies["sessionid"].value})
    assert stream.response.status_code == 200
    task = _task(user, catalog)
    assert stream.until(lambda e: e["event"] == "queued")[-1]["data"]["task_id"] == task.pk
    # A keep-alive comment while nothing happens (every second in this test).
    wait_for(lambda: stream.comments >= 1, timeout=5, message="a keep-alive comment")
    stream.close()


def test_one_user_may_hold_only_so_many_streams(web, make_user, catalog):
    """EASEL_EVENTS_STREAMS_PER_USER (10) per process: one more is refused in the error body
    (a refused EventSource stops, and the page polls), another user is not affected, and a
    closed stream makes room."""
    user = make_user()
    headers = _bearer(user)
    streams = [Stream(web.url, headers=headers) for _ in range(10)]
    assert all(s.response.status_code == 200 for s in streams)
    refused = requests.get(f"{web.url}/api/v1/events", headers=headers, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
    assert int(refused.headers["Retry-After"]) > 0
    assert Stream(web.url, headers=_bearer(make_user())).response.status_code == 200
    streams.pop().close()

    def room():
        again = Stream(web.url, headers=headers)
        if again.response.status_code == 200:
            streams.append(again)
            return True
        again.response.close()
        return False

    wait_for(room, timeout=15, message="a closed stream to make room")
    for stream in streams:
        stream.close()


def test_without_the_asgi_server_it_answers_what_is_there_and_ends(client, make_user, catalog):
    """Django's test client (or any WSGI server): no open stream, the backlog after the id."""
    from generation import transitions

    user = make_user()
    task = _task(user, catalog)
    transitions.cancel(task)
    client.force_login(user)
    response = client.get("/api/v1/events?last_event_id=0")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.startswith("retry: ")
    assert [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event:")] == [
        "created", "queued", "cancelled"]
    # Nothing to resume from: 204, which makes an EventSource stop (the page polls).
    assert client.get("/api/v1/events").status_code == 204


def test_the_stream_is_in_the_schema(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} >= {"last_event_id"}
    assert "Last-Event-ID" in operation["description"]
    assert "401" in operation["responses"]


def test_old_events_are_pruned_but_endings_outlive_progress(make_user, catalog):
    from datetime import timedelta

    from django.utils import timezone

    from generation.events import events_prune
    from generation.models import TaskEvent

    user = make_user()
    task = _task(user, catalog)
    now = timezone.now()
    TaskEvent.objects.create(user_id=user.pk, task_id=task.pk, kind="progress", data={"task_id": task.pk},
                             created_at=now - timedelta(minutes=5))
    TaskEvent.objects.create(user_id=user.pk, task_id=task.pk, kind="completed", data={"task_id": task.pk},
                             created_at=now - timedelta(minutes=5))
    TaskEvent.objects.create(user_id=user.pk, task_id=task.pk, kind="failed", data={"task_id": task.pk},
                             created_at=now - timedelta(hours=2))
    assert events_prune(now=now) == 2
    assert sorted(TaskEvent.objects.values_list("kind", flat=True)) == ["completed", "created", "queued"]


def test_progress_writes_one_event_per_change_in_one_statement(make_user, catalog, django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.events import tasks_progressed
    from generation.models import GenerationTask, TaskEvent

    user = make_user()
    tasks = [_task(user, catalog) for _ in range(3)]
    GenerationTask.objects.filter(pk__in=[t.pk for t in tasks]).update(status="processing", progress_value=2,
                                                                          progress_max=8)
    def statements(queries):
        return [q["sql"] for q in queries
                if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]

    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        assert tasks_progressed([t.pk for t in tasks]) == 3
    # Read the rows, insert the events (and on PostgreSQL the NOTIFY, sent once committed).
    assert len(statements(queries)) == 2 + (connection.vendor == "postgresql"), statements(queries)
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        assert tasks_progressed([t.pk for t in tasks]) == 0
    assert len(statements(queries)) == 1  # nothing changed: nothing written, no NOTIFY
    event = TaskEvent.objects.filter(kind="progress").latest("id")
    assert event.data["value"] == 2 and event.data["max"] == 8 and event.data["fraction"] == 0.25


# --- many viewers: one reader per process ------------------------------------------------


def _pg() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def test_fifty_streams_cost_one_reader_not_fifty(web, make_user, catalog):
    """50 open streams of 10 users: on PostgreSQL one LISTEN connection for the process;
    on SQLite the process's poll stays one query a tick. Every stream gets its events."""
    from django.db import connection

    from generation import transitions

    from concurrent.futures import ThreadPoolExecutor

    def sessions():
        # The web process's (PGAPPNAME in its environment).
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND application_name = 'easel-test-web'")
            return cursor.fetchone()[0]

    users = [make_user() for _ in range(10)]
    tokens = {u.pk: _token(u) for u in users}
    before = sessions() if _pg() else 0
    most = [before]
    opening = threading.Event()

    def sample():
        from django.db import connection as own

        while not opening.is_set():
            most[0] = max(most[0], sessions())
            time.sleep(0.01)
        own.close()

    sampler = threading.Thread(target=sample) if _pg() else None
    if sampler:
        sampler.start()
    # All at once, as viewers reconnecting after a restart.
    with ThreadPoolExecutor(50) as pool:
        streams = list(pool.map(lambda u: (u, Stream(web.url, headers={"Authorization": f"Bearer {tokens[u.pk]}"})),
                                [u for u in users for _ in range(5)]))
    opening.set()
    assert all(s.response.status_code == 200 for _u, s in streams)
    if sampler:
        sampler.join()
        # A burst of connects takes at most the process's pool (GUNICORN_THREADS requests
        # in sync code (config.concurrency) and the hub's reader), and its LISTEN connection.
        assert most[0] <= 4 + 1 + 1, (before, most[0])
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND query ILIKE 'LISTEN %%'")
            assert cursor.fetchone()[0] == 1
    started = time.monotonic()
    tasks = {u.pk: _task(u, catalog) for u in users}
    for task in tasks.values():
        transitions.cancel(task)
    for user, stream in streams:
        got = stream.until(lambda e: e["event"] == "cancelled", timeout=20)
        assert {e["data"]["task_id"] for e in got} == {tasks[user.pk].pk}
    # Every stream heard within a few poll intervals (PostgreSQL: woken by NOTIFY).
    assert time.monotonic() - started < 10
    if _pg():
        # Each sync request gives its connection back to the pool when it ends
        # (config.asgi): many requests, one after another, reuse the pool's; none is
        # opened anew (a new one would show a later backend_start).
        def opened():
            with connection.cursor() as cursor:
                cursor.execute("SELECT max(backend_start) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND application_name = 'easel-test-web' AND query NOT ILIKE 'LISTEN %%'")
                return cursor.fetchone()[0]

        requests.get(f"{web.url}/api/v1/quota", headers={"Authorization": f"Bearer {tokens[users[0].pk]}"}, timeout=10)
        before, newest = sessions(), opened()
        for _ in range(30):
            assert requests.get(f"{web.url}/api/v1/quota", headers={"Authorization": f"Bearer {tokens[users[0].pk]}"},
                                timeout=10).status_code == 200
        assert sessions() <= before and opened() == newest
    for _user, stream in streams:
        stream.close()


def test_the_hub_reads_once_a_tick_however_many_streams(transactional_db, make_user, catalog, settings, monkeypatch):
    """In-process: uvicorn serving config.asgi in a thread, 50 streams open; the hub's reads
    over two seconds (every SQL statement of the process, counted) do not grow with the
    streams."""
    import asyncio

    import uvicorn
    from generation.api.event_hub import hub

    settings.EASEL_EVENTS_STREAMS_PER_USER = 0  # fifty of one user here
    port = free_port()
    server = uvicorn.Server(uvicorn.Config("config.asgi:application", host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.started, timeout=20, message="uvicorn")
    try:
        user = make_user()
        headers = _bearer(user)
        first = Stream(url, headers=headers)
        statements: list[str] = []
        from django.db.backends.utils import CursorWrapper

        original = CursorWrapper._execute_with_wrappers

        def counted(self, sql, *args, **kwargs):
            statements.append(sql)
            return original(self, sql, *args, **kwargs)

        # Every statement of this process, whichever thread runs it (the streams' own
        # included, would they query).
        monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counted)
        streams = [first] + [Stream(url, headers=headers) for _ in range(49)]
        assert all(s.response.status_code == 200 for s in streams)
        wait_for(lambda: hub.stream_count == 50, timeout=10, message="50 streams")
        time.sleep(0.3)
        before, reads_before = len(statements), hub.reads
        time.sleep(2.0)
        ticks = 2.0 / settings.EASEL_EVENTS_POLL_INTERVAL if not _pg() else 1
        reads = hub.reads - reads_before
        assert reads <= ticks + 2, reads
        assert len(statements) - before <= ticks + 2, statements[before:]
        if _pg():
            assert hub.listening
        # And they all get the next event, from one read.
        task = _task(user, catalog)
        for stream in streams:
            stream.until(lambda e: e["event"] == "queued" and e["data"]["task_id"] == task.pk, timeout=10)
        for stream in streams:
            stream.close()
    finally:
        server.should_exit = True
        thread.join(10)
        from django.db import connection

        hub.executor.submit(lambda: connection.close()).result()  # the hub thread's own connection


@pytest.mark.django_db(transaction=True)
def test_the_wake_up_follows_the_commit_once_and_never_a_rollback(make_user, catalog):
    """On PostgreSQL the NOTIFY is sent after the change's transaction commits, in a
    transaction of its own (a NOTIFY inside it would make every change commit one at a
    time), once however many events the transaction wrote; none after a rollback."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from generation import events

    if connection.vendor != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    task = _task(make_user(), catalog)

    def notifies(queries):
        return [i for i, q in enumerate(queries) if "pg_notify" in q["sql"]]

    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            events.task_queued(task)
            events.task_queued(task)
            assert notifies(queries) == []  # not inside the change's transaction
    assert len(notifies(queries)) == 1
    assert notifies(queries)[0] > max(i for i, q in enumerate(queries) if q["sql"].startswith("INSERT"))
    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(RuntimeError), transaction.atomic():
            events.task_queued(task)
            raise RuntimeError("rolled back")
    assert notifies(queries) == []


@pytest.mark.django_db(transaction=True)
def test_a_wake_up_that_fails_after_the_commit_never_fails_the_change(make_user, catalog, monkeypatch):
    """The change is committed before its NOTIFY: a NOTIFY the database refuses (a cut
    connection, a server going down) is logged and left to the hub's periodic read. The
    caller sees its change succeed, and the commit's other hooks (the dispatch of a new
    task) still run."""
    from django.db import OperationalError, connection

    from generation import services
    from generation.models import GenerationTask

    if connection.vendor != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    enqueued = []
    monkeypatch.setattr(services, "generation_enqueue", lambda: enqueued.append(1))
    refused = []

    def refuse_notify(execute, sql, params, many, context):
        if "pg_notify" in sql:
            refused.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_notify):
        task = services.generation_create(user=make_user(), prompt="a lighthouse", model_name="demo-sd15")
    assert refused and enqueued == [1]
    assert GenerationTask.objects.filter(pk=task.pk).count() == 1
