"""Business-rule failures of the generation services, independent of HTTP.

The API's exception handler turns them into its error body (409, 429); pages show
their message.
"""
from __future__ import annotations

from datetime import datetime


class GenerationError(Exception):
    code = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class TaskStateError(GenerationError):
    """The task is not in a state that allows this (e.g. cancelling a finished task)."""

    code = "conflict"


class QuotaExceeded(GenerationError):
    """The user's daily image quota would be exceeded."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, resets_at: datetime, limit: int, used: int):
        super().__init__(message)
        self.resets_at, self.limit, self.used = resets_at, limit, used
