"""The stand-in's task table: what was submitted, when, and what a poll sees now."""

from __future__ import annotations

import base64
import random
import time
from dataclasses import dataclass, field

from .picture import placeholder_png


@dataclass
class Task:
    task_id: str
    req_key: str
    prompt: str
    seed: int
    width: int
    height: int
    submitted: float
    generate_seconds: float
    refuse_output: bool = False
    expire: bool = False
    #: Forgotten (``not_found``) once generated, as if its 12 hours had passed (the ``forget_next`` fault).
    forget: bool = False
    _png: bytes | None = field(default=None, repr=False)

    def status(self, now: float) -> str:
        elapsed = now - self.submitted
        if elapsed < self.generate_seconds / 3:
            return "in_queue"
        if elapsed < self.generate_seconds:
            return "generating"
        return "expired" if self.expire else "done"

    def png(self) -> bytes:
        if self._png is None:
            self._png = placeholder_png(prompt=self.prompt, req_key=self.req_key, seed=self.seed,
                                        width=self.width, height=self.height)
        return self._png

    def base64(self) -> str:
        return base64.b64encode(self.png()).decode("ascii")


class TaskTable:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.tasks: dict[str, Task] = {}
        self._random = random.SystemRandom()

    def new_id(self) -> str:
        # The real service's ids are 19-digit decimal strings ("7392616336519610409").
        while True:
            task_id = str(self._random.randrange(10**18, 10**19))
            if task_id not in self.tasks:
                return task_id

    def add(self, task: Task) -> None:
        self.tasks[task.task_id] = task

    def get(self, task_id: str, now: float | None = None) -> Task | None:
        now = time.monotonic() if now is None else now
        task = self.tasks.get(task_id)
        if task is not None and (now - task.submitted > self.ttl
                                 or (task.forget and now - task.submitted >= task.generate_seconds)):
            del self.tasks[task_id]  # forgotten, as the real service forgets a task after 12 hours
            return None
        return task

    def running(self, now: float) -> int:
        return sum(1 for task in self.tasks.values() if task.status(now) in ("in_queue", "generating"))
