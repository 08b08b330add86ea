"""Log output: readable text on a terminal, one JSON object per line for a log shipper.

`LOG_FORMAT=json` makes every record one line of JSON: `time` (UTC, ISO 8601), `level`,
`logger`, `message`, and `task_id`, `user_id`, `backend`, `prompt_id` when the record
carries them (see `generation.fleet.log.task_log`), plus `exc_info` with the traceback text. The default,
`text`, is the same information on one readable line.

Imported by `config/settings.py`: nothing here touches Django's settings at import time.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

# Fields a record may carry (through `extra=` or `generation.fleet.log.task_log`) that both formats show.
CONTEXT_FIELDS = ("task_id", "user_id", "backend", "prompt_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on an odd value (falls back to str)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message [task_id=.. user_id=.. backend=.. prompt_id=..]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(
            f"{field}={getattr(record, field)}" for field in CONTEXT_FIELDS if getattr(record, field, None) is not None
        )
        return f"{line} [{context}]" if context else line


def logging_config(*, fmt: str = "text", level: str = "INFO") -> dict:
    """The LOGGING dict for settings: console output in the chosen format."""
    fmt = (fmt or "text").strip().lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"()": "config.logging.TextFormatter"},
            "json": {"()": "config.logging.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt}},
        "root": {"handlers": ["console"], "level": (level or "INFO").upper()},
        "loggers": {
            # Django's defaults give these their own console handlers (in DEBUG): let
            # them reach the root handler only, so each record is one line in one format.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.server": {"handlers": [], "level": "INFO", "propagate": True},
            "django.db.backends": {"level": "WARNING"},
        },
    }
