"""Who may wait: `POST /api/v1/generation/create` holds a web thread while it waits for
its result, so the waits a process allows are bounded, per user and in all.

Threads belong to one web process (gunicorn runs each worker's threads), so the count
is kept per process: whatever one user sends, `EASEL_CREATE_WAIT_SLOTS` threads at the
most wait in a process, and the others stay free for everyone else's requests. A create
that finds no free slot answers 202 at once, as if its wait had run out.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from ..models import TERMINAL_STATUSES, GenerationTask

_lock = threading.Lock()
_by_user: Counter = Counter()
_total = 0


@contextmanager
def wait_slot(user_id: int) -> Iterator[bool]:
    """Yields whether this request may wait (and holds its slot until the block ends)."""
    global _total
    with _lock:
        granted = (_by_user[user_id] < settings.EASEL_CREATE_WAIT_PER_USER
                   and _total < settings.EASEL_CREATE_WAIT_SLOTS)
        if granted:
            _by_user[user_id] += 1
            _total += 1
    try:
        yield granted
    finally:
        if granted:
            with _lock:
                _total -= 1
                _by_user[user_id] -= 1
                if not _by_user[user_id]:
                    del _by_user[user_id]


def task_wait(task: GenerationTask, *, user_id: int) -> GenerationTask:
    """The task once it has ended, or as it is when the create wait
    (EASEL_CREATE_WAIT_SECONDS) runs out or no wait slot is free. Shared by the REST
    create and the OpenAI-compatible endpoints (generation.openai_api)."""
    with wait_slot(user_id) as may_wait:
        deadline = time.monotonic() + (settings.EASEL_CREATE_WAIT_SECONDS if may_wait else 0)
        while time.monotonic() < deadline:
            task.refresh_from_db()
            if task.status in TERMINAL_STATUSES:
                break
            time.sleep(0.25)
    return task
