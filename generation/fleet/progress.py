"""Progress of every prompt a pump follows, written in one statement per interval.

A pump may follow hundreds of prompts, each reporting a step a few times a second: one
UPDATE per prompt per interval would be hundreds of statements a second for a number
pages show. The runners (one thread each) leave their latest progress here; the pump's
loop writes all of it at once every EASEL_PROGRESS_WRITE_INTERVAL, each row only while
the runner that reported it still holds the task's lease and the task is unfinished (a
late write never touches a task that completed, was cancelled or moved on).
"""
from __future__ import annotations

import threading
from functools import reduce
from operator import or_

from django.db.models import Case, F, Q, Value, When

from ..events import tasks_progressed
from ..models import ACTIVE_STATUSES, GenerationTask

FIELDS = ("progress_value", "progress_max", "progress_node")


class ProgressBatch:
    def __init__(self):
        self._lock = threading.Lock()
        self._latest: dict[int, tuple[str, dict]] = {}

    def put(self, task_id: int, owner: str, values: dict) -> None:
        """The latest progress of one task (an earlier one not yet written is replaced)."""
        with self._lock:
            self._latest[task_id] = (owner, values)

    def discard(self, task_id: int, owner: str) -> None:
        """Forget what this runner left unwritten: its task ended or it let go of it. (Most
        tiny tasks end within the interval: the write would find them all finished.)"""
        with self._lock:
            if task_id in self._latest and self._latest[task_id][0] == owner:
                del self._latest[task_id]

    def flush(self) -> int:
        """Write what was reported since the last flush, in one UPDATE; the rows written."""
        with self._lock:
            latest, self._latest = self._latest, {}
        if not latest:
            return 0
        owned = reduce(or_, (Q(pk=pk, lease_owner=owner) for pk, (owner, _v) in latest.items()))
        values = {}
        for name in FIELDS:
            field = GenerationTask._meta.get_field(name)
            values[name] = Case(*(When(pk=pk, then=Value(v[name], output_field=field)) for pk, (_o, v) in latest.items()),
                                default=F(name), output_field=field)
        written = GenerationTask.objects.filter(owned, status__in=ACTIVE_STATUSES).update(**values)
        if written:
            tasks_progressed(latest)  # the owners' event streams (generation.events)
        return written
