"""ASGI entry point: what gunicorn serves, with the uvicorn worker (deploy/gunicorn.conf.py).

Django's ASGI handler runs the async views (the event stream, GET /api/v1/events) in the
server's event loop, so an open stream holds no thread; every other view is sync and runs
in one of the process's request threads, which live as long as the process (each keeps
its database connection from one request to the next, as under a threaded WSGI server).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler

from config.concurrency import bounded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# The paths served by async views (they must not hold a thread while they stream).
ASYNC_PATHS = ("/api/v1/events",)


class SyncChainHandler(ASGIHandler):
    """Django's ASGI handler with the middleware and the (sync) view in one thread hop.

    The stock handler builds its middleware chain for async: each of Django's own
    middleware then runs its hooks through `sync_to_async`, and a sync-only one in the
    chain (Easel's) switches back to the event loop with `async_to_sync`, so a request to
    a sync view made about ten hops between the loop and a thread (0.6-0.8 ms of CPU of
    the 2.7 ms a bare API view costs). Every view but the event stream is sync: this
    handler runs the whole sync chain, `get_response`, in the request's thread at once.
    """

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        # Django's own handler gives each request a new thread (its ThreadSensitiveContext
        # makes an executor per request), so each request also opened a new database
        # connection (1.2 ms of CPU on SQLite, a new server session on PostgreSQL without
        # the pool) and closed it at the end. Here every thread-sensitive step of the
        # request (request_started, the chain with its view, closing the response and
        # request_finished) runs on one kept thread: its connection serves the next
        # request, checked and aged by Django's own close_old_connections at both ends,
        # as under a threaded WSGI server.
        executor = request_threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # (A view still running after its client went away keeps the thread a moment
            # longer: the next request given it waits its turn, as on a WSGI thread.)
            request_threads.give_back(executor)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


class RequestThreads:
    """The process's request threads: one single-thread executor per request at a time.

    `config.concurrency` lets GUNICORN_THREADS requests at most into sync code at once,
    so that many threads are made and kept; more are made if ever needed, and kept too."""

    def __init__(self):
        self._free: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self.made = 0

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._free:
                return self._free.pop()
            self.made += 1
            number = self.made
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-request-{number}")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            self._free.append(executor)

    def close_connections(self) -> None:
        """Close the database connections of the threads not serving a request now (the
        tests' end: their database cannot be dropped while a connection is open)."""
        from django.db import connections

        with self._lock:
            idle = list(self._free)
        for executor in idle:
            executor.submit(connections.close_all).result()


request_threads = RequestThreads()


def _routed(streams, others):
    async def app(scope, receive, send):
        chosen = streams if scope["type"] == "http" and scope["path"].startswith(ASYNC_PATHS) else others
        return await chosen(scope, receive, send)

    return app


# At most GUNICORN_THREADS requests at once in sync code per process (config.concurrency);
# the event stream takes a slot only for its reads before it starts.
application = bounded(_routed(get_asgi_application(), SyncChainHandler()), unbounded_paths=ASYNC_PATHS)

from django.core import signals  # noqa: E402 (after the settings are set up)
from django.db import connections  # noqa: E402


def _close_db_connections(sender=None, **kwargs):
    if not (isinstance(sender, type) and issubclass(sender, ASGIHandler)):
        return  # a request served otherwise (the test client, in a test's transaction)
    if issubclass(sender, SyncChainHandler):
        return  # its threads are kept, with their connections (SyncChainHandler.__call__)
    # Under Django's own handler (the event stream) each request's sync steps run in a
    # thread of its own that ends with it: a connection kept for a later request
    # (DB_CONN_MAX_AGE) would never be used again and stay open until the garbage
    # collector finds it (on PostgreSQL, one server process each). request_finished is
    # sent in that request's thread: its connections close.
    for connection in connections.all(initialized_only=True):
        connection.close()


signals.request_finished.connect(_close_db_connections, dispatch_uid="easel-asgi-close-connections")
