"""gunicorn settings for Easel: `gunicorn --config deploy/gunicorn.conf.py config.asgi:application`.

The workers are uvicorn's (config.asgi_worker.UvicornWorker): the event stream
(GET /api/v1/events) is an async view, and an open stream must not hold a worker or a
thread. Every other view is sync; Django runs each such request in a thread of its own.

Read from the same environment as Django's settings (without importing them):

- WEB_CONCURRENCY: worker processes (default: 2 x CPU cores + 1, at most 8; the
  machine's cores, or the container's CPU quota when one is set).
- GUNICORN_THREADS: how many requests per worker run Django's sync code at once (default
  4; config.concurrency, uvicorn's worker giving each a thread of its own); the others
  wait their turn. `POST /api/v1/generation/create` holds one while it waits for the
  result (at most EASEL_CREATE_WAIT_SLOTS, half of them by default).
- EASEL_CREATE_WAIT_SECONDS: that wait; the worker timeout stays 30 s above it so a
  waiting request is never killed as "stuck".
- EASEL_HOST / EASEL_PORT or GUNICORN_BIND: where to listen (0.0.0.0:8000 in a container).
- FORWARDED_ALLOW_IPS (read by gunicorn itself): proxies trusted for X-Forwarded-*.
- GUNICORN_CONTROL_SOCKET: where `gunicornc` finds this server (default: one socket per
  studio, named after its data folder and address).
- LOG_FORMAT=json: gunicorn's own and access log lines as JSON too (config.logging).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile


def _cpu_count() -> int:
    # A container limited with --cpus sees every host core in cpu_count(); the cgroup
    # quota says what it may really use.
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return multiprocessing.cpu_count()


def _workers() -> int:
    configured = os.environ.get("WEB_CONCURRENCY", "")
    if configured.strip():
        return max(1, int(configured))
    return min(2 * _cpu_count() + 1, 8)


CREATE_WAIT_SECONDS = float(os.environ.get("EASEL_CREATE_WAIT_SECONDS") or 30)

bind = os.environ.get("GUNICORN_BIND") or (
    f"{os.environ.get('EASEL_HOST', '0.0.0.0')}:{os.environ.get('EASEL_PORT', '8000')}"
)
workers = _workers()
worker_class = "config.asgi_worker.UvicornWorker"
# What gunicorn serves when no application is named on its command line.
wsgi_app = "config.asgi:application"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
# On PostgreSQL each worker borrows its connections from a pool of threads + 1 (the
# event hub's reader): see DATABASES in config/settings.py. Set here, not in config.asgi,
# so only the web workers pool (a process that imports config.asgi itself does not).
os.environ.setdefault("EASEL_DB_POOL", "1")
# Above the create wait, so `create` answers 200/202 itself instead of being killed.
timeout = int(CREATE_WAIT_SECONDS) + 30
graceful_timeout = 30
keepalive = 5
# gunicorn's maximum, far above its default of 4094, so Django enforces the real limit
# (EASEL_MAX_URI_LENGTH, config.middleware) and answers it with the API's error body
# under /api/. uvicorn's parser does the reading: config.asgi_worker sizes its limit from
# this one.
limit_request_line = 8190
# Recycle workers now and then (bounded memory growth), not all at once (uvicorn's worker
# honours it; its open event streams end and their clients reconnect).
max_requests = 2000
max_requests_jitter = 200
# Heartbeat files in memory: a container's overlay filesystem can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"


def _control_socket() -> str:
    # gunicorn's default is one socket per user (~/.gunicorn/gunicorn.ctl): two studios
    # on one machine would share it, and `gunicornc` would talk to the wrong one. One per
    # studio instead: named after its data folder and address (short enough for a socket).
    configured = os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip()
    if configured:
        return configured
    data = os.path.abspath(os.environ.get("EASEL_DATA_DIR") or "data")
    key = hashlib.sha256(f"{data}|{bind}".encode()).hexdigest()[:16]
    folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(folder, f"easel-gunicorn-{key}.ctl")


control_socket = _control_socket()
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

if os.environ.get("LOG_FORMAT", "text").strip().lower() == "json":
    # The access line becomes the JSON record's message; one object per line.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": loglevel.upper(), "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
