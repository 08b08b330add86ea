"""What runs when the web server begins a graceful stop (config.asgi_worker calls `stopping`).

Long-lived answers (the event streams) would otherwise hold the stop until gunicorn's
graceful timeout: they register here and end at once; their clients reconnect.
"""
from __future__ import annotations

import logging
from typing import Callable

logger = logging.getLogger(__name__)
_callbacks: list[Callable[[], None]] = []


def on_stop(callback: Callable[[], None]) -> None:
    _callbacks.append(callback)


def stopping() -> None:
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:
            logger.exception("stop hook %r failed", callback)
