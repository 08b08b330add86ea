"""Sign-in lockout: one rule and one counter for the three doors (the API's
`POST /api/v1/auth/login`, the sign-in page and the admin's login).

After `EASEL_LOGIN_MAX_FAILURES` wrong passwords for one account from one client IP
within `EASEL_LOGIN_FAILURE_WINDOW` seconds (counted from the first), that account is
refused from that IP on every door until the window has passed, even with the right
password. Per account *and* IP, so guessing one account's password is slowed down
without letting a stranger lock its owner out from another address.

The account is the one the typed name signs in as (a username or an e-mail address,
case-insensitively), so "ann" and "ann@example.com" share a count; a name with no
account counts under the name itself, so it is refused just like a real one.

Counters live in the `default` cache (`CACHE_URL`): with Redis or a database table,
every gunicorn worker and host sees the same count.
"""
from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle


def client_ip(request) -> str:
    """The client's address as the API's throttles see it (EASEL_NUM_PROXIES trusted
    proxies' X-Forwarded-For, else REMOTE_ADDR): the same for a page as for the API."""
    return BaseThrottle().get_ident(request) or ""


def _account(username: str) -> str:
    User = get_user_model()
    try:
        return f"user:{User.objects.get_by_natural_key(username.strip()).pk}"
    except (User.DoesNotExist, User.MultipleObjectsReturned):
        return f"name:{username.strip().lower()}"


def _keys(username: str, ip: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{_account(username)}\0{ip}".encode()).hexdigest()
    return f"easel:login-failures:{digest}", f"easel:login-failures-until:{digest}"


def login_locked_for(*, username: str, ip: str) -> int:
    """Seconds until this account may try again from this IP (0: it may now)."""
    count_key, until_key = _keys(username, ip)
    values = cache.get_many([count_key, until_key])
    if values.get(count_key, 0) < settings.EASEL_LOGIN_MAX_FAILURES:
        return 0
    return max(1, math.ceil(values.get(until_key, time.time() + 1) - time.time()))


def login_failure_record(*, username: str, ip: str) -> None:
    """Count one wrong password. `add` then `incr`: atomic on Redis and in memory, so two
    workers failing at once both count."""
    count_key, until_key = _keys(username, ip)
    window = settings.EASEL_LOGIN_FAILURE_WINDOW
    now = time.time()
    cache.add(until_key, now + window, timeout=window)  # the window starts at the first failure
    cache.add(count_key, 0, timeout=window)
    try:
        cache.incr(count_key)
    except ValueError:  # expired between the add and the incr: a new window
        cache.set(count_key, 1, timeout=window)
    # The database cache's incr rewrites the value with the default timeout: keep the window's.
    remaining = max(1, math.ceil((cache.get(until_key) or now + window) - now))
    cache.touch(count_key, timeout=remaining)


def login_failures_clear(*, username: str, ip: str) -> None:
    """A right password resets the count (only while not locked out: see the doors)."""
    cache.delete_many(list(_keys(username, ip)))
