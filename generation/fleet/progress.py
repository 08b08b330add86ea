"""Progress of every prompt a pump follows, written at once every interval.

A pump may follow hundreds of prompts, each reporting a step a few times a second: a
write per report would be hundreds of transactions a second for a number pages show.
The runners (one thread each) leave their latest progress here; the pump's loop writes
all of it at once every EASEL_PROGRESS_WRITE_INTERVAL (one statement, compiled once, run
for every row in one call to the driver, in one transaction), each row only while
the runner that reported it still holds the task's lease and the task is unfinished (a
late write never touches a task that completed, was cancelled or moved on).
"""
from __future__ import annotations

import threading

from django.db import transaction

from config.prepared import PreparedUpdate

from .. import transitions
from ..events import tasks_progressed

FIELDS = ("progress_value", "progress_max", "progress_node")

# One row's progress, compiled once (config.prepared) and run for every row of a flush
# in one call to the driver: a CASE with a branch per task was compiled anew each time.
_WRITE = PreparedUpdate(
    lambda pk, owner, value, maximum, node: (transitions.owned_by(pk, owner), {
        "progress_value": value, "progress_max": maximum, "progress_node": node,
    }),
    arguments=5, markers=(None, transitions.OWNER_MARKER, None, None, "<easel progress node marker>"),
)


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
        """Write what was reported since the last flush, in one transaction; the rows written."""
        with self._lock:
            latest, self._latest = self._latest, {}
        if not latest:
            return 0
        with transaction.atomic():
            written = _WRITE.run_many([(pk, owner, *(values[name] for name in FIELDS))
                                       for pk, (owner, values) in latest.items()])
        if written:
            tasks_progressed(latest)  # the owners' event streams (generation.events)
        return written
