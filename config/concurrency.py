"""How many requests of one web process run Django's sync code at once.

Under gunicorn's threaded worker a process served GUNICORN_THREADS requests at a time and
the others waited for a thread. Django's ASGI handler gives each sync request a thread of
its own, without a limit: a burst of requests (a few hundred viewers reconnecting after a
restart) would open as many database connections at once and exhaust PostgreSQL's
`max_connections`. `sync_slot` keeps the old bound: at most GUNICORN_THREADS (default 4)
requests per process in sync code, the rest waiting their turn in the event loop, where
waiting costs neither a thread nor a connection. An open event stream holds a slot only
while it reads the database before it starts (generation.api.events).
"""
from __future__ import annotations

import asyncio
import contextlib
import os

_slots: dict[int, asyncio.Semaphore] = {}


def slots() -> int:
    return max(1, int(os.environ.get("GUNICORN_THREADS") or 4))


@contextlib.asynccontextmanager
async def sync_slot():
    loop = asyncio.get_running_loop()
    semaphore = _slots.get(id(loop))
    if semaphore is None:
        semaphore = _slots[id(loop)] = asyncio.Semaphore(slots())
    async with semaphore:
        yield


def bounded(application, *, unbounded_paths: tuple[str, ...] = ()):
    """The ASGI application with each HTTP request (but those under `unbounded_paths`,
    which take a slot themselves where they need one) holding a slot throughout."""

    async def app(scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(unbounded_paths):
            return await application(scope, receive, send)
        async with sync_slot():
            return await application(scope, receive, send)

    return app
