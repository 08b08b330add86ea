"""How a run stops early: the exceptions a runner (of either kind of backend) raises and `TaskRunner.run` handles."""
from __future__ import annotations

from ..task_text import Text


class TaskGone(Exception):
    """The task was deleted, cancelled or taken over while this job worked on it."""


class HandOver(Exception):
    """The pump running this job ends: let go of the task (its prompt runs on) for the next pump."""


class TaskFailed(Exception):
    def __init__(self, code: str, message: Text | str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}
