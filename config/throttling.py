"""The API's rate limits (429 answers carry `retry_after`, see config.api_errors).

A module of its own: DRF imports the throttle classes named in settings while it
builds `APIView`, so this must not import anything that imports DRF's views.

Counters live in the `default` cache. That is a per-process LocMemCache in the embedded
setup, so with several gunicorn workers each keeps its own count (limits are then per
process); multi-process deployments should point the default cache at the database
(DatabaseCache) or Redis so the limits hold across processes and hosts.
"""
from __future__ import annotations

from rest_framework import throttling
from rest_framework.settings import api_settings


class _RatesFromSettings:
    """Read the rate when the throttle is built, not when DRF was imported (tests, reloads)."""

    def get_rate(self):
        if not getattr(self, "scope", None):
            return None
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_RatesFromSettings, throttling.UserRateThrottle):
    """A generous limit per signed-in user, whichever of their tokens they use."""


class AnonThrottle(_RatesFromSettings, throttling.AnonRateThrottle):
    """Per client IP for calls without credentials."""


class ScopedThrottle(_RatesFromSettings, throttling.ScopedRateThrottle):
    """A view's own `throttle_scope` (e.g. login per IP)."""
