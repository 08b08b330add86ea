"""Log lines about one task carry the task's id, owner, backend and ComfyUI prompt_id
(`config.logging`'s formatters show them as fields, or as JSON keys)."""
from __future__ import annotations

import logging

from models_catalog.models import ComfyBackend


class TaskLogAdapter(logging.LoggerAdapter):
    """Adds the task's id, owner, backend name and ComfyUI prompt_id to every record.

    Read from the task at each call, so a record written after a failover names the
    new backend; the backend's name is looked up once per backend id.
    """

    def __init__(self, logger: logging.Logger, task, extra: dict | None = None):
        super().__init__(logger, extra or {})
        self.task = task
        self._backend_id = None
        self._backend_name = None

    def _backend(self) -> str | None:
        backend_id = getattr(self.task, "backend_id", None)
        if backend_id is None:
            return None
        if backend_id != self._backend_id:
            self._backend_id, self._backend_name = backend_id, _backend_name(self.task, backend_id)
        return self._backend_name

    def process(self, msg, kwargs):
        context = {
            "task_id": getattr(self.task, "pk", None),
            "user_id": getattr(self.task, "user_id", None),
            "backend": self._backend(),
            "prompt_id": str(self.task.prompt_id) if getattr(self.task, "prompt_id", None) else None,
        }
        # Explicit extra= on a call wins over the task's fields and the adapter's own.
        kwargs["extra"] = {**context, **self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


def _backend_name(task, backend_id: int) -> str:
    # The related object when it is already loaded (no query), else one small query.
    cached = getattr(task, "_state", None) and task._state.fields_cache.get("backend")
    if cached is not None and cached.pk == backend_id:
        return cached.name
    try:
        name = ComfyBackend.objects.filter(pk=backend_id).values_list("name", flat=True).first()
    except Exception:  # logging must never break the caller (no database, etc.)
        name = None
    return name or f"#{backend_id}"


def task_log(task, logger: logging.Logger | str = "generation.fleet.runner", **extra) -> TaskLogAdapter:
    """A logger for one task: `task_log(task).info("submitted to %s", url)`."""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return TaskLogAdapter(logger, task, extra)
