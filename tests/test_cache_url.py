"""CACHE_URL: the cache every web worker shares (rate limits, sign-in lockouts)."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.cache_url import cache_from_url

ROOT = Path(__file__).resolve().parents[1]
REDIS = "redis://127.0.0.1:6379/13"


def test_the_three_kinds_of_url():
    assert cache_from_url("locmem://")["BACKEND"].endswith("locmem.LocMemCache")
    assert cache_from_url("db://easel_cache") == {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                                                   "LOCATION": "easel_cache"}
    redis = cache_from_url("redis://:secret@cache-host:6380/2?key_prefix=studio1&health_check_interval=30")
    assert redis["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    # The prefix is Django's; the other parameters are redis-py's and stay in the URL.
    assert redis["LOCATION"] == "redis://:secret@cache-host:6380/2?health_check_interval=30"
    assert redis["KEY_PREFIX"] == "studio1" and redis["OPTIONS"]["socket_timeout"] == 2
    assert cache_from_url("rediss://cache-host")["LOCATION"] == "rediss://cache-host"


@pytest.mark.parametrize("url", ["memcached://x:11211", "db://", "db://bad-name;drop", "redis://", "nonsense"])
def test_a_url_easel_cannot_use_is_refused_at_start(url):
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL"):
        cache_from_url(url)


def _settings_in_a_process(env: dict, code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_two_processes_pointed_at_redis_share_the_default_cache():
    """What one process counts, another sees: the premise of shared limits."""
    prefix = f"easel-test-{uuid.uuid4().hex}"
    env = {"CACHE_URL": f"{REDIS}?key_prefix={prefix}"}
    code = "from django.core.cache import cache; print(cache.incr('n') if cache.add('n', 0, 60) or True else 0)"
    assert _settings_in_a_process(env, code) == "1"
    assert _settings_in_a_process(env, code) == "2"
    # Another prefix (another studio on the same Redis) counts apart.
    assert _settings_in_a_process({"CACHE_URL": f"{REDIS}?key_prefix={prefix}-other"}, code) == "1"


def test_without_cache_url_each_process_has_its_own_memory():
    out = _settings_in_a_process({"CACHE_URL": ""}, "from django.conf import settings; "
                                 "print(settings.CACHES['default']['BACKEND'])")
    assert out == "django.core.cache.backends.locmem.LocMemCache"


def test_setup_makes_the_table_of_a_database_cache(tmp_path):
    import sqlite3

    env = {**os.environ, "CACHE_URL": "db://easel_shared_cache", "EASEL_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path}/studio.sqlite3", "COMFYUI_URLS": ""}
    result = subprocess.run([sys.executable, "manage.py", "setup", "--no-sync"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    tables = {row[0] for row in sqlite3.connect(tmp_path / "studio.sqlite3").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"easel_shared_cache", "easel_qcluster_cache"} <= tables
    # And the studio's processes use it: a value one writes, another reads.
    code = "from django.core.cache import cache; cache.set('k', 'v', 60)"
    subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], cwd=ROOT,
                   env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, check=True, timeout=60)
    assert _settings_in_a_process({k: env[k] for k in ("CACHE_URL", "EASEL_DATA_DIR", "DATABASE_URL")},
                                  "from django.core.cache import cache; print(cache.get('k'))") == "v"
