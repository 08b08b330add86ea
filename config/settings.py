"""Easel settings.

Every setting is read from the environment once, here, with a default that works on a
laptop (SQLite and media under ./data, the built-in demo engine as the only backend).
The README's configuration reference lists each variable.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core -------------------------------------------------------------------------

DATA_DIR = Path(os.environ.get("EASEL_DATA_DIR", BASE_DIR / "data")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

# "production" turns the laptop conveniences off: no generated secret key, DEBUG off.
EASEL_ENV = os.environ.get("EASEL_ENV", "development")
PRODUCTION = EASEL_ENV == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when EASEL_ENV=production.")
    # Kept in the data folder so sessions and tokens survive restarts of a laptop install.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    # Swagger UI and ReDoc assets served from our own static files (no CDN).
    "drf_spectacular_sidecar",
    "django_q",
    "accounts",
    "models_catalog",
    "generation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # Over-long URIs (414) and ids in paths beyond 64 bits (404), in the reader's language.
    "config.middleware.RequestLimitsMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Keeps answers under /api/ in the API's error body (413, HTML error pages, 500).
    "config.middleware.ApiErrorMiddleware",
    # A database connection that died under a request: a read runs once more, else 503.
    "config.middleware.ConnectionLostMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.easel",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------

# Connections are kept for a minute by default: opening one costs more than the query
# most requests make (~20 ms on PostgreSQL; on SQLite the PRAGMAs below run again).
# Safe on both: a connection belongs to one thread and each gunicorn thread serves one
# request at a time; every kept connection is health-checked before a request or a job
# uses it (below); the pump's runner threads and other threads outside a request close
# their own. 0 opens one per request again (for a pooler that wants short sessions).
# PostgreSQL then holds up to workers x threads connections per web host, plus the
# qcluster's: keep max_connections above that.
db_conn_max_age = env_int("DB_CONN_MAX_AGE", 60)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'easel.sqlite3'}"),
        conn_max_age=db_conn_max_age,
        # A kept connection the server dropped while it sat idle (a restart, a failover,
        # pg_terminate_backend) is found before a request's or a job's first query uses
        # it, and replaced, instead of failing that query (config/db.py covers the rest).
        conn_health_checks=db_conn_max_age > 0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("EASEL_DB_POOL", False):
    # The web tier (deploy/gunicorn.conf.py sets EASEL_DB_POOL=1): under uvicorn's worker
    # every sync request runs in a thread that ends with it, so a connection kept for the
    # thread (DB_CONN_MAX_AGE) would never serve a second request, and each request paid
    # for a new PostgreSQL session (~20 ms). A pool per process keeps them instead: a
    # request borrows one and gives it back when it ends (config.asgi). Its size is what
    # the process may use at once: GUNICORN_THREADS requests in sync code
    # (config.concurrency) and the event hub's reader; more would wait for one (the pool's
    # timeout) rather than exceed PostgreSQL's max_connections. Each borrowed connection
    # is checked first (a failover or a restart drops idle ones). Other processes (the
    # qcluster, manage.py) keep their own per-thread connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("EASEL_DB_POOL_SIZE", env_int("GUNICORN_THREADS", 4) + 1),
        "timeout": env_float("EASEL_DB_POOL_TIMEOUT", 30.0),
        "max_idle": 300,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Easel's own backend: Django's, with the writers of all processes queued on a file
    # lock instead of polling in SQLite's busy handler (config/sqlite3/base.py).
    DATABASES["default"]["ENGINE"] = "config.sqlite3"
    # The web server, the qcluster workers and the tests' helper processes share one
    # SQLite file: WAL lets readers run beside a writer, IMMEDIATE transactions take the
    # write lock up front (no "database is locked" on lock upgrade), and the timeout
    # lets a writer wait for another instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so a real qcluster process can share the test database;
    # one per test run, so runs side by side do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("EASEL_TEST_SQLITE", str(DATA_DIR / f"test_easel_{os.getpid()}.sqlite3"))
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts ---------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
KNOX_TOKEN_MODEL = "accounts.ApiToken"
# knox's own migrations would create its (swapped-out) token table with a foreign key
# to the user table that no model owns, which blocks flushing users on PostgreSQL.
MIGRATION_MODULES = {"knox": None}
AUTHENTICATION_BACKENDS = ["accounts.backends.UsernameOrEmailBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "generation:generate"
LOGOUT_REDIRECT_URL = "accounts:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Defaults copied onto each new user; staff change them per user in the admin.
EASEL_DEFAULT_DAILY_IMAGE_QUOTA = env_int("EASEL_DEFAULT_DAILY_IMAGE_QUOTA", 200)
EASEL_DEFAULT_MAX_CONCURRENT_TASKS = env_int("EASEL_DEFAULT_MAX_CONCURRENT_TASKS", 2)
EASEL_ALLOW_SIGNUP = env_bool("EASEL_ALLOW_SIGNUP", True)

# --- Internationalisation ---------------------------------------------------------

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_URL = "/media/"  # never served directly: files go through owner-checked views
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
# --- Storage (deployment block: config/storage.py) --------------------------------
# Empty: local files under MEDIA_ROOT. `s3://bucket?endpoint_url=...&region=...`: an
# S3-compatible bucket through django-storages (private objects, short signed URLs).
STORAGE_URL = os.environ.get("STORAGE_URL", "")
from config.storage import storage_from_url  # noqa: E402

STORAGES = {
    "default": storage_from_url(STORAGE_URL),
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# The first handler stops a multipart body while it streams once its files pass
# EASEL_MAX_UPLOAD_BYTES, before the others write them to memory or a temporary file.
FILE_UPLOAD_HANDLERS = [
    "config.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Longest URI (path and query) answered; longer is a 414 (the API's error body under
# /api/). gunicorn's own limit sits above it (deploy/gunicorn.conf.py).
EASEL_MAX_URI_LENGTH = env_int("EASEL_MAX_URI_LENGTH", 4094)

# --- Security ---------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("EASEL_BEHIND_HTTPS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Browsers keep to HTTPS for this long after one visit (0 turns the header off).
    # Subdomains are left alone: they may be other services on plain HTTP.
    SECURE_HSTS_SECONDS = env_int("EASEL_HSTS_SECONDS", 365 * 24 * 3600)

# --- API --------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON bounded in nesting depth, uploads refused by size while they stream.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "config.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "config.api_errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "config.api_errors.EaselAutoSchema",
    # Rate limits. The counters live in the `default` cache: per process with the
    # embedded LocMemCache; multi-process deployments set CACHE_URL (Redis or a
    # database table) so the limits hold across workers.
    "DEFAULT_THROTTLE_CLASSES": [
        "config.throttling.UserThrottle",
        "config.throttling.AnonThrottle",
        "config.throttling.ScopedThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        # Generous: a client polling a few tasks every 2 s stays far below it.
        "user": os.environ.get("EASEL_API_RATE_USER", "600/min"),
        "anon": os.environ.get("EASEL_API_RATE_ANON", "120/min"),
        # Sign-in attempts per client IP, whatever the username.
        "login": os.environ.get("EASEL_API_RATE_LOGIN", "10/min"),
        "register": os.environ.get("EASEL_API_RATE_REGISTER", "20/hour"),
    },
    # Trusted reverse proxies in front of Easel, so throttles see the client's IP (0:
    # REMOTE_ADDR only; X-Forwarded-For from a client is never trusted then).
    "NUM_PROXIES": env_int("EASEL_NUM_PROXIES", 1 if env_bool("EASEL_BEHIND_HTTPS_PROXY", False) else 0),
}
# After this many failed sign-ins for one account from one IP, on any door (the API,
# the sign-in page, the admin: accounts/lockout.py), further attempts are refused on all
# three until the window has passed since the first failure.
EASEL_LOGIN_MAX_FAILURES = env_int("EASEL_LOGIN_MAX_FAILURES", 5)
EASEL_LOGIN_FAILURE_WINDOW = env_int("EASEL_LOGIN_FAILURE_WINDOW", 15 * 60)
# Longest lifetime of a personal API token made with POST /api/v1/auth/tokens.
EASEL_TOKEN_MAX_DAYS = 365

SPECTACULAR_SETTINGS = {
    "TITLE": "Easel API",
    "DESCRIPTION": (
        "Image generation for app clients. Send `Authorization: Bearer <token>` (from "
        "`POST /api/v1/auth/login` or `POST /api/v1/auth/tokens`). Every error answers "
        '`{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"TaskStatusEnum": "generation.models.TaskStatus", "RunOutcomeEnum": "generation.models.RunOutcome",
                            "RunEndEnum": "generation.models.RunEnd"},
}
from datetime import timedelta  # noqa: E402

REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Bearer",
    "TOKEN_TTL": timedelta(hours=env_int("EASEL_TOKEN_TTL_HOURS", 24 * 30)),
    "AUTO_REFRESH": False,
    "TOKEN_LIMIT_PER_USER": env_int("EASEL_TOKEN_LIMIT_PER_USER", 50),
    "USER_SERIALIZER": "accounts.serializers.UserSerializer",
}

# --- Generation -------------------------------------------------------------------

# Extra ComfyUI servers registered at start-up, comma separated (name=url or url).
COMFYUI_URLS = env_list("COMFYUI_URLS")
# The built-in demo engine started by `manage.py studio`.
EASEL_DEMO_ENGINE = env_bool("EASEL_DEMO_ENGINE", True)
EASEL_DEMO_ENGINE_PORT = env_int("EASEL_DEMO_ENGINE_PORT", 8189)
COMFYUI_HTTP_TIMEOUT = env_float("COMFYUI_HTTP_TIMEOUT", 10.0)
# VolcEngine backends: the key pair a backend uses when staff left its own empty in the admin (a deployment that
# keeps secrets in the environment), and the timeout of one call to the visual API.
EASEL_VOLCENGINE_ACCESS_KEY_ID = os.environ.get("EASEL_VOLCENGINE_ACCESS_KEY_ID", "")
EASEL_VOLCENGINE_SECRET_ACCESS_KEY = os.environ.get("EASEL_VOLCENGINE_SECRET_ACCESS_KEY", "")
EASEL_VOLCENGINE_HTTP_TIMEOUT = env_float("EASEL_VOLCENGINE_HTTP_TIMEOUT", 30.0)
# How long a task waits for an unreachable backend (retrying with backoff) before failing.
EASEL_BACKEND_UNREACHABLE_TIMEOUT = env_float("EASEL_BACKEND_UNREACHABLE_TIMEOUT", 120.0)
EASEL_BACKEND_RETRY_MAX_DELAY = env_float("EASEL_BACKEND_RETRY_MAX_DELAY", 15.0)
# A task not yet submitted goes back to the queue (another backend may take it) after
# its backend stayed unreachable this long.
EASEL_BACKEND_HANDBACK_SECONDS = env_float("EASEL_BACKEND_HANDBACK_SECONDS", 8.0)
# A submitted task whose backend stays away this long is run elsewhere under a new
# prompt_id; the old prompt is taken off that backend when it returns.
EASEL_FAILOVER_GRACE_SECONDS = env_float("EASEL_FAILOVER_GRACE_SECONDS", 60.0)
# Longest a single generation may run on a backend before Easel gives up on it.
EASEL_EXECUTION_TIMEOUT = env_int("EASEL_EXECUTION_TIMEOUT", 1200)
# How long `POST /api/v1/generation/create` waits for the result before answering 202.
EASEL_CREATE_WAIT_SECONDS = env_float("EASEL_CREATE_WAIT_SECONDS", 30.0)
# Such a wait holds a web thread: at most this many per user, and this many in all per
# web process (default: half of gunicorn's threads), so the other threads always serve
# everyone else. Over either cap the create answers 202 at once.
EASEL_CREATE_WAIT_PER_USER = env_int("EASEL_CREATE_WAIT_PER_USER", 2)
EASEL_CREATE_WAIT_SLOTS = env_int("EASEL_CREATE_WAIT_SLOTS", max(1, env_int("GUNICORN_THREADS", 4) // 2))
# How long an image link answered by the OpenAI-compatible API (`response_format=url`)
# works, in seconds: a signed link that needs no token (generation.openai_api.links).
EASEL_OPENAI_URL_MAX_AGE = env_int("EASEL_OPENAI_URL_MAX_AGE", 3600)
# Progress is written to the database at most this often per task.
EASEL_PROGRESS_WRITE_INTERVAL = env_float("EASEL_PROGRESS_WRITE_INTERVAL", 0.5)
# How long each process remembers the catalog answers every create asks for (the default
# model and template): a change saved in another process is seen within this time.
EASEL_CATALOG_CACHE_SECONDS = env_float("EASEL_CATALOG_CACHE_SECONDS", 2.0)
# How long each process keeps the queue's shape (waiting tasks per user, running tasks,
# online backends, mean run times) that a waiting task's place and estimated times are
# read from (generation.outlook).
EASEL_QUEUE_OUTLOOK_SECONDS = env_float("EASEL_QUEUE_OUTLOOK_SECONDS", 2.0)
# The event stream (GET /api/v1/events): how long the events a reconnecting client must
# not miss are kept (Last-Event-ID), how often a web process on SQLite looks for new ones
# (PostgreSQL wakes it with NOTIFY instead), and the keep-alive comment's interval.
EASEL_EVENTS_KEEP_SECONDS = env_int("EASEL_EVENTS_KEEP_SECONDS", 3600)
EASEL_EVENTS_POLL_INTERVAL = env_float("EASEL_EVENTS_POLL_INTERVAL", 0.5)
EASEL_EVENTS_KEEPALIVE_SECONDS = env_float("EASEL_EVENTS_KEEPALIVE_SECONDS", 15.0)
# Open streams one user may hold in one web process (tabs, devices); one more is refused
# with 429 and the page polls instead. Bounds what one account can make a process hold.
EASEL_EVENTS_STREAMS_PER_USER = env_int("EASEL_EVENTS_STREAMS_PER_USER", 10)
# A job holds a task for this long without renewing before another may take it over.
EASEL_TASK_LEASE_SECONDS = env_int("EASEL_TASK_LEASE_SECONDS", 60)
# The pumps (generation.fleet.pump): how many django-q2 jobs follow the prompts (each one
# any number of them, up to EASEL_PUMP_SLOTS at once), and how long one runs before it
# hands over to the next (well below the cluster's timeout).
EASEL_PUMPS = env_int("EASEL_PUMPS", 1)
EASEL_PUMP_SLOTS = env_int("EASEL_PUMP_SLOTS", 200)
EASEL_PUMP_SECONDS = env_int("EASEL_PUMP_SECONDS", 300)
EASEL_MAX_PROMPT_LENGTH = env_int("EASEL_MAX_PROMPT_LENGTH", 2000)
EASEL_MIN_SIZE = env_int("EASEL_MIN_SIZE", 64)
EASEL_MAX_SIZE = env_int("EASEL_MAX_SIZE", 2048)
EASEL_MAX_STEPS = env_int("EASEL_MAX_STEPS", 150)
EASEL_MAX_BATCH_SIZE = env_int("EASEL_MAX_BATCH_SIZE", 4)
EASEL_THUMBNAIL_SIZE = env_int("EASEL_THUMBNAIL_SIZE", 256)
EASEL_DEFAULT_DENOISE = env_float("EASEL_DEFAULT_DENOISE", 0.75)
# Source images for img2img: refused above these (the pixel check runs before decoding,
# so a decompression bomb never expands).
EASEL_MAX_UPLOAD_BYTES = env_int("EASEL_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
EASEL_MAX_UPLOAD_PIXELS = env_int("EASEL_MAX_UPLOAD_PIXELS", 4096 * 4096)

# --- Webhooks ---------------------------------------------------------------------

# Callback URLs on loopback or private networks are refused (SSRF) unless this is on.
EASEL_WEBHOOK_ALLOW_PRIVATE = env_bool("EASEL_WEBHOOK_ALLOW_PRIVATE", False)
EASEL_WEBHOOK_MAX_ATTEMPTS = env_int("EASEL_WEBHOOK_MAX_ATTEMPTS", 6)
EASEL_WEBHOOK_BACKOFF_BASE = env_float("EASEL_WEBHOOK_BACKOFF_BASE", 5.0)
EASEL_WEBHOOK_BACKOFF_MAX = env_float("EASEL_WEBHOOK_BACKOFF_MAX", 3600.0)
EASEL_WEBHOOK_TIMEOUT = env_float("EASEL_WEBHOOK_TIMEOUT", 10.0)
# Short backoffs are slept in the delivery job (0: every retry waits for the schedule).
EASEL_WEBHOOK_INLINE_RETRY_MAX = env_float("EASEL_WEBHOOK_INLINE_RETRY_MAX", 30.0)
# For receivers whose certificate comes from an internal certificate authority.
EASEL_WEBHOOK_CA_BUNDLE = os.environ.get("EASEL_WEBHOOK_CA_BUNDLE", "")
# The studio's public address; when set, image URLs in webhook payloads are absolute.
EASEL_PUBLIC_URL = os.environ.get("EASEL_PUBLIC_URL", "")

# --- django-q2 --------------------------------------------------------------------

Q_CLUSTER = {
    "name": "easel",
    "orm": "default",
    # The pumps (EASEL_PUMPS workers) plus a few for short jobs (dispatch, health
    # checks, webhooks): not one per backend, whatever the size of the fleet.
    "workers": env_int("Q_WORKERS", 4),
    # The longest job is a pump (EASEL_PUMP_SECONDS, then its hand-over); `retry` stays
    # above `timeout` so a running job is never handed to a second worker meanwhile.
    "timeout": EASEL_PUMP_SECONDS + 120,
    "retry": EASEL_PUMP_SECONDS + 300,
    "max_attempts": 3,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": env_float("Q_POLL", 0.5),
    "catch_up": False,
    "label": "Django Q2",
    # Cluster heartbeats go to a database cache so the web process (health, pages)
    # can see workers running in other processes and on other hosts.
    "cache": "qcluster",
    "guard_cycle": 1.0,
}

from config.cache_url import cache_from_url  # noqa: E402

CACHES = {
    # Rate limits and sign-in lockouts (config/cache_url.py): shared by every web worker
    # and host when CACHE_URL names Redis or a database table.
    "default": cache_from_url(os.environ.get("CACHE_URL") or "locmem://"),
    "qcluster": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "easel_qcluster_cache"},
    # Live preview frames by (task, version) (generation.gallery.files.preview_response),
    # apart from `default` so that frames never push the rate-limit counters out. Per
    # process on purpose: a process that misses reads the frame from the database once.
    "previews": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "easel-previews",
                 "TIMEOUT": 60, "OPTIONS": {"MAX_ENTRIES": 200}},
}

# --- Deployment: retention and logs (config/logging.py, generation/retention.py) ---

# Retention (hourly schedule "easel-retention", or `manage.py retention`): a finished
# task's images are removed this many days after it finished (0: kept forever), and the
# oldest finished tasks' images go first while all images exceed this many GB (10^9
# bytes; 0: no limit). The task rows stay, marked with files_removed_at. Running and
# shared tasks are never touched.
EASEL_MAX_HISTORY_DAYS = env_int("EASEL_MAX_HISTORY_DAYS", 0)
EASEL_MAX_STORAGE_GB = env_float("EASEL_MAX_STORAGE_GB", 0.0)

# --- Metrics (generation/ops/metrics.py; docs/production.md) ------------------------

# GET /metrics (Prometheus) is off (404) unless one of these is set. With a token the
# scraper sends `Authorization: Bearer <token>`; with an allow-list (IP addresses or
# CIDR networks, comma-separated) only those clients may scrape, the client's address
# read as the API's throttles read it (EASEL_NUM_PROXIES). With both, both must pass.
EASEL_METRICS_TOKEN = os.environ.get("EASEL_METRICS_TOKEN", "")
EASEL_METRICS_ALLOW = env_list("EASEL_METRICS_ALLOW")


def _check_networks(name: str, values: list[str]) -> None:
    import ipaddress

    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {value!r} is not an IP address or CIDR network.") from None


_check_networks("EASEL_METRICS_ALLOW", EASEL_METRICS_ALLOW)

# --- Logging ----------------------------------------------------------------------

# `text` (readable, the default) or `json` (one object per line, for a log shipper).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
from config.logging import logging_config  # noqa: E402

LOGGING = logging_config(fmt=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))
# --- end of the deployment block ----------------------------------------------------
