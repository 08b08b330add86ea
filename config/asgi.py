"""ASGI entry point: what gunicorn serves, with the uvicorn worker (deploy/gunicorn.conf.py).

Django's ASGI handler runs the async views (the event stream, GET /api/v1/events) in the
server's event loop, so an open stream holds no thread; every other view is sync and runs
in a thread of its own as before.
"""
import os

from asgiref.sync import sync_to_async
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

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


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
    # Under ASGI each sync request runs in a thread of its own that ends with it: a
    # connection kept for a later request (DB_CONN_MAX_AGE) would never be used again and
    # stay open until the garbage collector finds it (on PostgreSQL, one server process
    # each). request_finished is sent in that request's thread: its connections close.
    for connection in connections.all(initialized_only=True):
        connection.close()


signals.request_finished.connect(_close_db_connections, dispatch_uid="easel-asgi-close-connections")
