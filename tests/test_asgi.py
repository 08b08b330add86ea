"""What gunicorn serves (config.asgi): a sync view costs one thread hop, not ten, its
thread and database connection serve the next request, and a statement compiled once
serves every request's thread (config.prepared)."""
from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref import sync
from django.core.handlers.asgi import ASGIHandler

from config.asgi import SyncChainHandler, application
from config.prepared import Prepared


def _get(app, path: str, headers: list | None = None) -> tuple[int, bytes]:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # no disconnect while the answer is made

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"accept", b"application/json"), *(headers or [])],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def hops(monkeypatch):
    """How many times a request switched between the event loop and a thread, each way."""
    counts = {"to_thread": 0, "to_loop": 0}
    to_thread, to_loop = sync.SyncToAsync.__call__, sync.AsyncToSync.__call__

    async def counted_to_thread(self, *args, **kwargs):
        counts["to_thread"] += 1
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        counts["to_loop"] += 1
        return to_loop(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(sync.AsyncToSync, "__call__", counted_to_loop)
    return counts


@pytest.mark.django_db(transaction=True)
def test_a_sync_view_runs_its_middleware_and_view_in_one_hop(hops):
    status, body = _get(SyncChainHandler(), "/api/v1/health/live")
    assert status == 200, body
    # request_started, the chain with its view, closing the response: never back to the loop.
    assert hops == {"to_thread": 3, "to_loop": 0}
    # Django's own handler, as before, for comparison: Easel's sync-only middleware in an
    # async chain made it go back and forth.
    hops.update(to_thread=0, to_loop=0)
    status, _body = _get(ASGIHandler(), "/api/v1/health/live")
    assert status == 200
    assert hops["to_loop"] >= 1 and hops["to_thread"] >= 6


@pytest.mark.django_db(transaction=True)
def test_requests_one_after_another_share_one_thread_and_its_database_connection(django_user_model):
    from django.db import connection
    from django.db.backends.signals import connection_created
    from django.core import signals

    from accounts.services import token_create

    user = django_user_model.objects.create_user(username="ada", password="pw-long-enough-1")
    _token, key = token_create(user=user)
    connection.close()  # the test's own; only the requests' count below
    opened, threads = [], set()

    def on_connection(sender, connection, **kwargs):
        opened.append(threading.get_ident())

    def on_request(sender, **kwargs):
        threads.add(threading.get_ident())

    connection_created.connect(on_connection)
    signals.request_started.connect(on_request)
    try:
        for _ in range(5):
            status, body = _get(application, "/api/v1/generation/history",
                                [(b"authorization", f"Bearer {key}".encode())])
            assert status == 200, body  # the token read and the history read: the database each time
    finally:
        connection_created.disconnect(on_connection)
        signals.request_started.disconnect(on_request)
    # Django's own handler made a thread per request, and each opened a connection.
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert len(opened) == 1


@pytest.mark.django_db(transaction=True)
def test_the_served_application_answers_pages_and_api_alike():
    assert _get(application, "/api/v1/health/live")[0] == 200
    status, body = _get(application, "/api/v1/no-such-thing")
    assert status == 404 and b'"error"' in body  # the API's error body, from the sync chain's middleware


@pytest.mark.django_db(transaction=True)
def test_a_prepared_read_is_compiled_once_for_all_threads(django_user_model):
    from django.utils import timezone

    user = django_user_model.objects.create_user(username="ada", password="pw-long-enough-1")
    builds = []

    def build(pk):
        builds.append(pk)
        return django_user_model.objects.filter(pk=pk).values_list("username", "date_joined")

    read = Prepared(build, arguments=1)
    answers = []

    def in_a_thread():
        from django.db import connection

        try:
            answers.append(read.first(user.pk))
        finally:
            connection.close()

    for _ in range(3):  # each request of the ASGI server runs in a thread of its own
        thread = threading.Thread(target=in_a_thread)
        thread.start()
        thread.join()
    assert len(builds) == 1
    # Converted like the ORM's own rows (a datetime, not SQLite's text).
    assert answers == [("ada", user.date_joined)] * 3
    assert timezone.is_aware(answers[0][1])


def test_an_api_input_copies_its_declared_fields_without_building_them_again(monkeypatch):
    from rest_framework import fields

    from generation.api.tasks import TaskCreateInput

    built = []
    init = fields.Field.__init__

    def counted(self, *args, **kwargs):
        if not isinstance(self, TaskCreateInput):
            built.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(fields.Field, "__init__", counted)
    first = TaskCreateInput(data={"prompt": "a cat", "steps": 8, "sampler": "euler"})
    second = TaskCreateInput(data={"prompt": "a dog", "steps": "8"})
    assert first.is_valid(), first.errors
    assert first.validated_data["prompt"] == "a cat" and first.validated_data["steps"] == 8
    assert not second.is_valid() and set(second.errors) == {"steps"}  # text for a number, from JSON
    assert built == []  # DRF's deep copy built each of the fifteen fields again, per request
    # Each serializer binds copies of its own.
    assert first.fields["prompt"] is not second.fields["prompt"]
    assert first.fields["prompt"].parent is first and second.fields["prompt"].parent is second
    assert TaskCreateInput._declared_fields["prompt"].parent is None
