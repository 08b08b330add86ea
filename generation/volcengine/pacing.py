"""How often Easel asks VolcEngine: polls that back off while a task runs, a rate no caller may exceed (the
account's QPS limit is shared by every task on it), and the poll loop that uses both."""

from __future__ import annotations

import threading
import time
from typing import Callable

from .client import Result, VolcClient, VolcError

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Backoff:
    """Delays that start at ``first`` and grow by ``factor`` up to ``longest`` seconds: a task that just started
    is looked at soon, one that takes minutes is not asked about every second."""

    def __init__(self, first: float = 1.0, factor: float = 1.5, longest: float = 10.0) -> None:
        if first <= 0 or factor < 1 or longest < first:
            raise ValueError("need 0 < first <= longest and factor >= 1")
        self.first, self.factor, self.longest = first, factor, longest
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.longest, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first


class RateLimit:
    """At most ``per_second`` calls per second among everyone holding this object (threads included): each
    ``wait()`` takes the next free slot, 1/``per_second`` after the one before, and sleeps until it comes."""

    def __init__(self, per_second: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval = 1.0 / per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")

    def wait(self) -> float:
        """Block until this caller may make its call; the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        return slot - now


class FollowTimeout(Exception):
    """The task was still running when the deadline came."""


def follow(client: VolcClient, req_key: str, task_id: str, *, deadline: float, backoff: Backoff,
           limit: RateLimit | None = None, on_poll: Callable[[Result], None] | None = None,
           clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> Result:
    """Poll a task until it stops running (``done``, ``not_found`` or ``expired``) and return that answer.

    Transient errors (``VolcError.retryable``) are polled through with the same backoff while the deadline allows;
    others are raised. ``on_poll`` sees each running answer (progress, a lease to renew) and may raise to stop.
    Raises ``FollowTimeout`` when ``deadline`` (a ``clock()`` time) passes with the task still running.
    """
    last_error: VolcError | None = None
    while True:
        if limit is not None:
            limit.wait()
        try:
            result = client.result(req_key, task_id)
        except VolcError as exc:
            if not exc.retryable:
                raise
            last_error = exc
        else:
            if not result.running:
                return result
            last_error = None
            if on_poll is not None:
                on_poll(result)
        delay = backoff.next()
        if clock() + delay > deadline:
            if last_error is not None:
                raise last_error
            raise FollowTimeout(task_id)
        sleep(delay)
