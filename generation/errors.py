"""Business-rule failures of the generation services, independent of HTTP.

They are `config.api_errors.ServiceError`s: the API's exception handler answers each
with its status (409, 429) and the error body; pages show their message.
"""
from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from rest_framework import status

from config.api_errors import ServiceError


class GenerationError(ServiceError):
    code = "error"


class TaskStateError(GenerationError):
    """The task is not in a state that allows this (e.g. cancelling a finished task)."""

    code = "conflict"


class QuotaExceeded(GenerationError):
    """The user's daily image quota would be exceeded."""

    code = "quota_exceeded"
    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, message: str, *, resets_at: datetime, limit: int, used: int):
        super().__init__(message)
        self.resets_at, self.limit, self.used = resets_at, limit, used
        self.retry_after = max(1, int((resets_at - timezone.now()).total_seconds()))

    def extra(self) -> dict:
        return {"retry_after": self.retry_after, "resets_at": self.resets_at.isoformat(), "limit": self.limit,
                "used": self.used}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
