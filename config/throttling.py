"""The API's rate limits (429 answers carry `retry_after`, see config.api_errors).

A module of its own: DRF imports the throttle classes named in settings while it
builds `APIView`, so this must not import anything that imports DRF's views.

Counters live in the `default` cache (`CACHE_URL`, config/cache_url.py). That is a
per-process LocMemCache in the embedded setup, so with several gunicorn workers each
keeps its own count (limits are then per process); multi-process deployments set
CACHE_URL to Redis or a database table so the limits hold across processes and hosts.
"""
from __future__ import annotations

from array import array

from django.core.cache import cache as default_cache
from rest_framework import throttling
from rest_framework.settings import api_settings


class _CompactHistories:
    """The throttles' cache, keeping each history (DRF's list of request times, newest
    first) as an array of doubles.

    LocMemCache pickles a value on every get and set, once per API call, and a list of
    floats pickles float by float: 0.8 ms a call for the 20,000 times that a busy client
    of a generous limit gathers within the minute (what bench/api_overhead.py's status
    poll met); an array pickles as one block of bytes. DRF's own code reads and changes
    it as it would the list (`pop`, `insert(0, ...)`, `len`, `[-1]`). A list already
    stored (by an earlier version, in a shared cache) is read as an array.
    """

    def __init__(self, cache):
        self._cache = cache

    def get(self, key, default=None):
        value = self._cache.get(key)
        if value is None:
            return default
        return value if isinstance(value, array) else array("d", value)

    def set(self, key, value, timeout=None):
        self._cache.set(key, value if isinstance(value, array) else array("d", value), timeout)

    def __getattr__(self, name):
        return getattr(self._cache, name)


class _RatesFromSettings:
    """Read the rate when the throttle is built, not when DRF was imported (tests, reloads)."""

    cache = _CompactHistories(default_cache)

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
