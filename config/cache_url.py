"""`CACHE_URL`: which cache is the `default` one, the cache every web worker and host
must share (rate limits, sign-in lockouts).

- `locmem://` (the default): each process its own memory. Right for one process on a
  laptop; with several gunicorn workers each counts on its own, so limits multiply.
- `redis://[:password@]host:6379/0` (or `rediss://` for TLS): Django's RedisCache.
  `?key_prefix=easel` puts every key under a prefix (several studios on one Redis).
- `db://table_name`: Django's DatabaseCache in that table of the main database
  (created by `migrate` and `manage.py setup`, as the worker heartbeat table is).
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

# A Redis that stops answering must fail a request in seconds (the throttles and the
# health check then say so), not hold a web thread for the kernel's TCP timeout.
REDIS_TIMEOUT_SECONDS = 2


def cache_from_url(url: str) -> dict:
    """The CACHES entry a CACHE_URL stands for; ImproperlyConfigured for anything else."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": parts.netloc or "easel-default"}
    if scheme == "db":
        table = (parts.netloc + parts.path).strip("/")
        if not table.replace("_", "").isalnum():
            raise ImproperlyConfigured(
                f"CACHE_URL {url!r}: name the cache table, letters, digits and _ only (db://easel_cache).")
        return {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": table}
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ImproperlyConfigured(f"CACHE_URL {url!r}: a Redis URL names its host (redis://redis:6379/0).")
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("key_prefix", "")
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS, "socket_timeout": REDIS_TIMEOUT_SECONDS},
        }
    raise ImproperlyConfigured(
        f"CACHE_URL {url!r}: use redis://host:6379/0, db://table_name or locmem:// (the default).")
