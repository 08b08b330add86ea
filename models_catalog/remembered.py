"""Catalog answers every create asks for, remembered a moment in each process.

A create reads the default template and the default (or named) model: queries with
EXISTS subqueries that cost a fifth of a create's CPU, for answers that change only
when staff edit the catalog or a backend's files are synced. Each process keeps an
answer for EASEL_CATALOG_CACHE_SECONDS and forgets them all at once when a catalog row
is saved or deleted in that process (signals, connected in apps.py); a change made in
another process is seen within those seconds. 0 turns it off.

Callers get their own copy of a remembered row (the prefetched inputs of a template are
shared: they are only read).
"""
from __future__ import annotations

import copy
import threading
import time
from typing import Callable, TypeVar

from django.conf import settings

T = TypeVar("T")

_answers: dict[tuple, tuple[float, object]] = {}
_lock = threading.Lock()


def remembered(key: tuple, load: Callable[[], T]) -> T:
    seconds = settings.EASEL_CATALOG_CACHE_SECONDS
    if seconds <= 0:
        return load()
    now = time.monotonic()
    with _lock:
        hit = _answers.get(key)
    if hit is not None and hit[0] > now:
        value = hit[1]
    else:
        value = load()
        with _lock:
            _answers[key] = (now + seconds, value)
    return copy.copy(value)


def forget(**_signal) -> None:
    with _lock:
        _answers.clear()
