"""ASGI entry point: what gunicorn serves, with the uvicorn worker (deploy/gunicorn.conf.py).

Django's ASGI handler runs the async views (the event stream, GET /api/v1/events) in the
server's event loop, so an open stream holds no thread; every other view is sync and runs
in a thread of its own as before.
"""
import os

from django.core.asgi import get_asgi_application

from config.concurrency import bounded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# At most GUNICORN_THREADS requests at once in sync code per process (config.concurrency);
# the event stream takes a slot only for its reads before it starts.
application = bounded(get_asgi_application(), unbounded_paths=("/api/v1/events",))

from django.core import signals  # noqa: E402 (after the settings are set up)
from django.db import connections  # noqa: E402


def _close_db_connections(**kwargs):
    # Under ASGI each sync request runs in a thread of its own that ends with it: a
    # connection kept for a later request (DB_CONN_MAX_AGE) would never be used again and
    # stay open until the garbage collector finds it (on PostgreSQL, one server process
    # each). request_finished is sent in that request's thread: its connections close.
    for connection in connections.all(initialized_only=True):
        connection.close()


signals.request_finished.connect(_close_db_connections, dispatch_uid="easel-asgi-close-connections")
