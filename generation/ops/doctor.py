"""Is this studio healthy? The checks behind `manage.py doctor` and the staff dashboard.

Each check answers with a level (ok / warning / error), one line saying what it found
and, when something is wrong, one line saying how to fix it.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django.utils.translation import gettext as _, gettext_lazy
from django_q.status import Stat

from models_catalog.models import Checkpoint, ComfyBackend
from models_catalog.services import backend_check

from ..fleet.holdings import backends_held, backends_unheld
from ..fleet.pump import pumps_alive, tasks_unfollowed
from ..fleet.workers import worker_status

OK, WARNING, ERROR = "ok", "warning", "error"
# The names and levels stay as they are in `manage.py doctor` and the dashboard's CSV
# (scripts read them); pages show these labels, in the reader's language.
LEVEL_LABELS = {OK: gettext_lazy("ok"), WARNING: gettext_lazy("warning"), ERROR: gettext_lazy("error")}
CHECK_LABELS = {
    "migrations": gettext_lazy("Database migrations"),
    "workers": gettext_lazy("Workers"),
    "pumps": gettext_lazy("Pumps"),
    "backends": gettext_lazy("Backends"),
    "media": gettext_lazy("Media storage"),
    "security": gettext_lazy("Security settings"),
    "clock": gettext_lazy("Clocks"),
    "cache": gettext_lazy("Shared cache"),
}
BACKEND_CHECK = "backend:"
# Longer than a heartbeat's life in the cache (3 s) plus a beat.
HEARTBEAT_GRACE = 4.0
# Worker and web clocks further apart than this make leases and schedules misbehave.
CLOCK_SKEW_TOLERANCE = timedelta(seconds=30)
# Django's own insecure default prefix, and the length below which a key is too short.
INSECURE_PREFIX = "django-insecure"
MIN_SECRET_KEY_LENGTH = 50


@dataclass
class Check:
    name: str
    level: str
    message: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.level == OK

    @property
    def label(self) -> str:
        """The check's name in the reader's language ("backend:gpu-1" names the backend)."""
        if self.name.startswith(BACKEND_CHECK):
            return _("Backend %(name)s") % {"name": self.name[len(BACKEND_CHECK):]}
        return str(CHECK_LABELS.get(self.name, self.name))

    @property
    def level_label(self) -> str:
        return str(LEVEL_LABELS.get(self.level, self.level))

    def as_dict(self) -> dict:
        return asdict(self)


def check_migrations() -> Check:
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # the database itself is unreachable
        return Check("migrations", ERROR, _("Cannot read the database: %(error)s") % {"error": exc},
                     _("Check DATABASE_URL and that the database server is running."))
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _backwards in plan[:5])
        return Check("migrations", ERROR,
                     _("%(n)d migration(s) not applied: %(names)s") % {"n": len(plan), "names": names},
                     _("Run: python manage.py migrate"))
    return Check("migrations", OK, _("All migrations are applied."))


def _missing_cache_tables() -> list[str]:
    wanted = [
        c["LOCATION"] for c in settings.CACHES.values()
        if c.get("BACKEND", "").endswith("db.DatabaseCache") and c.get("LOCATION")
    ]
    existing = set(connection.introspection.table_names())
    return [t for t in wanted if t not in existing]


def check_workers(*, wait: bool = False) -> Check:
    """`wait`: a missed heartbeat is looked at again for a few seconds (the command
    line can wait; the dashboard answers at once)."""
    missing = _missing_cache_tables()
    if missing:
        # Workers write their heartbeats there: without it no worker is ever seen.
        return Check("workers", ERROR, _("The cache table %(tables)s does not exist: worker heartbeats are lost.")
                     % {"tables": ", ".join(missing)}, _("Run: python manage.py createcachetable"))
    status = worker_status()
    # A cluster's heartbeat lives 3 s in the cache and is written each guard cycle: a
    # loaded host can miss one for a moment. A dead cluster stays silent; look again.
    deadline = time.monotonic() + (HEARTBEAT_GRACE if wait else 0)
    while not status["alive"] and time.monotonic() < deadline:
        time.sleep(0.5)
        status = worker_status()
    if not status["alive"]:
        return Check("workers", ERROR, _("No qcluster heartbeat: tasks will stay pending."),
                     _("Start the workers: python manage.py qcluster (or ./run.sh)."))
    workers = sum(c["workers"] for c in status["clusters"])
    hosts = ", ".join(sorted({c["host"] for c in status["clusters"]}))
    # The pumps hold a worker each for as long as they run; short jobs (dispatch,
    # health checks, webhooks) need one more. The fleet's size does not matter.
    needed = settings.EASEL_PUMPS + 1
    if workers < needed:
        return Check("workers", WARNING,
                     _("%(workers)d worker(s) for %(pumps)d pump(s): short jobs (webhooks, dispatch) will wait.")
                     % {"workers": workers, "pumps": settings.EASEL_PUMPS},
                     _("Set Q_WORKERS to at least %(n)d (one per pump, plus one).") % {"n": needed})
    return Check("workers", OK, _("%(clusters)d cluster(s), %(workers)d worker(s) on %(hosts)s.")
                 % {"clusters": len(status["clusters"]), "workers": workers, "hosts": hosts})


def check_pumps() -> Check:
    """The pumps beat, and follow what is assigned (generation.fleet.pump)."""
    alive = list(pumps_alive().filter(started_at__isnull=False))
    if not alive:
        if pumps_alive().exists():
            return Check("pumps", WARNING, _("A pump is queued but has not started: are the workers busy?"),
                         _("Set Q_WORKERS to at least %(n)d.") % {"n": settings.EASEL_PUMPS + 1})
        return Check("pumps", ERROR, _("No pump is running: assigned tasks will not start."),
                     _("Start the workers (python manage.py qcluster); they start the pumps within a minute."))
    running = sum(p.running for p in alive)
    held = backends_held()
    backends = sorted({name for p in alive for name in held.get(p.pk, [])})
    unheld = backends_unheld()
    if unheld:
        return Check("pumps", WARNING,
                     _("No pump holds %(names)s: tasks assigned there do not start (a pump died? another "
                       "takes its backends once their leases run out).") % {"names": ", ".join(unheld)},
                     _("Check the workers' log; if it lasts, restart the qcluster."))
    unfollowed = tasks_unfollowed()
    if unfollowed:
        return Check("pumps", WARNING,
                     _("%(n)d assigned task(s) are not followed by any pump (a pump died? they are taken "
                       "over once their leases run out).") % {"n": unfollowed},
                     _("Check the workers' log; if it lasts, restart the qcluster."))
    message = _("%(n)d pump(s) following %(running)d prompt(s), on %(hosts)s.") % {
        "n": len(alive), "running": running, "hosts": ", ".join(sorted({p.host for p in alive}))}
    if backends:
        message += " " + _("Backends held: %(names)s.") % {"names": ", ".join(backends)}
    return Check("pumps", OK, message)


def _volc_check(name: str, backend: ComfyBackend, offered: set) -> Check:
    if not backend.is_online:
        return Check(name, ERROR, _("%(name)s is unreachable: %(error)s")
                     % {"name": backend.name, "error": backend.last_error or _("not checked yet")},
                     _("Check the VolcEngine endpoint %(url)s and the backend's access key, or disable this backend.")
                     % {"url": backend.base_url})
    if not offered:
        return Check(name, WARNING, _("%(name)s has none of the enabled checkpoints.") % {"name": backend.name},
                     _("Choose the models it offers on the backend in the admin, and enable them."))
    return Check(name, OK, _("%(name)s online (VolcEngine).") % {"name": backend.name})


def check_backends(*, probe: bool = True, timeout: float = 3.0) -> list[Check]:
    """At least one backend online; each enabled one reachable and holding an enabled checkpoint.

    probe=False reads what the last health check recorded (no network: the dashboard).
    """
    backends = list(ComfyBackend.objects.filter(enabled=True).order_by("name"))
    checks: list[Check] = []
    if probe:
        for backend in backends:
            backend_check(backend=backend, timeout=timeout)
    enabled_checkpoints = set(Checkpoint.objects.filter(enabled=True).values_list("pk", flat=True))
    availability: dict[int, set[int]] = {}
    for backend_id, checkpoint_id in Checkpoint.backends.through.objects.filter(
        comfybackend_id__in=[b.pk for b in backends]
    ).values_list("comfybackend_id", "checkpoint_id"):
        availability.setdefault(backend_id, set()).add(checkpoint_id)
    online = [b for b in backends if b.is_online and not b.draining]
    if not online:
        checks.append(Check("backends", ERROR, _("No backend is online: nothing can be generated."),
                            _("Start ComfyUI (or the demo engine) and add it under ComfyUI backends in the admin.")))
    else:
        checks.append(Check("backends", OK, _("%(n)d of %(total)d enabled backend(s) online.")
                            % {"n": len(online), "total": len(backends)}))
    for backend in backends:
        name = f"{BACKEND_CHECK}{backend.name}"
        if backend.is_volcengine:
            checks.append(_volc_check(name, backend, availability.get(backend.pk, set()) & enabled_checkpoints))
        elif not backend.is_online:
            checks.append(Check(name, ERROR, _("%(name)s is unreachable: %(error)s")
                                % {"name": backend.name, "error": backend.last_error or _("not checked yet")},
                                _("Check that ComfyUI runs at %(url)s, or disable this backend.")
                                % {"url": backend.base_url}))
        elif not availability.get(backend.pk, set()) & enabled_checkpoints:
            checks.append(Check(name, WARNING, _("%(name)s has none of the enabled checkpoints.")
                                % {"name": backend.name},
                                _("Put a model in ComfyUI's models/checkpoints and run \"Sync checkpoints\".")))
        else:
            checks.append(Check(name, OK, _("%(name)s online (ComfyUI %(version)s).")
                                % {"name": backend.name, "version": backend.comfyui_version or "?"}))
    return checks


def check_media() -> Check:
    probe = f"doctor/probe-{uuid.uuid4().hex}.txt"
    try:
        name = default_storage.save(probe, ContentFile(b"easel doctor probe"))
        default_storage.delete(name)
    except Exception as exc:
        return Check("media", ERROR, _("Media storage is not writable: %(error)s") % {"error": exc},
                     _("Make MEDIA_ROOT (or the S3 bucket) writable by the web and worker processes."))
    return Check("media", OK, _("Media storage is writable."))


def check_security() -> list[Check]:
    problems = []
    key = settings.SECRET_KEY or ""
    if key.startswith(INSECURE_PREFIX) or len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 5:
        problems.append(_("SECRET_KEY is a default or shorter than %(n)d characters") % {"n": MIN_SECRET_KEY_LENGTH})
    if "*" in settings.ALLOWED_HOSTS:
        problems.append(_("ALLOWED_HOSTS contains '*'"))
    if settings.DEBUG:
        problems.append(_("DEBUG is on"))
    production = getattr(settings, "PRODUCTION", False)
    if not problems:
        return [Check("security", OK, _("Secret key, ALLOWED_HOSTS and DEBUG are safe for production."))]
    message = "; ".join(problems) + "."
    fix = _("Set a long random SECRET_KEY, list your host names in ALLOWED_HOSTS, and DEBUG=0.")
    # On a laptop (EASEL_ENV=development) these are the expected conveniences.
    return [Check("security", ERROR if production else WARNING, message, fix)]


def check_shared_cache() -> Check:
    """Rate limits and sign-in lockouts count in the default cache (CACHE_URL): in memory,
    each web worker counts on its own, so every limit multiplies by the workers."""
    backend = settings.CACHES["default"]["BACKEND"]
    if not backend.endswith("locmem.LocMemCache"):
        return Check("cache", OK, _("Rate limits and sign-in lockouts are shared by every web worker (%(backend)s).")
                     % {"backend": backend.rsplit(".", 1)[-1]})
    if getattr(settings, "PRODUCTION", False):
        return Check("cache", WARNING,
                     _("CACHE_URL is not set: rate limits and sign-in lockouts count per web worker."),
                     _("Set CACHE_URL to a Redis or a database table (see docs/production.md)."))
    return Check("cache", OK, _("Rate limits and sign-in lockouts count in this process's memory (one process)."))


def check_clock_skew(*, now=None) -> Check:
    """Compare this host's clock with the worker hosts'.

    django-q2 clusters stamp each heartbeat (`Stat.timestamp`) with their own clock
    every guard cycle, and the heartbeat lives 3 s in the cache, so a healthy stamp is
    between a few seconds old and now. A stamp far in the future means a worker clock
    ahead; one far in the past (or heartbeats that vanish at once because the entry
    looks expired to this host) means one behind. When no cluster runs there is nothing
    to compare with: the check says so and passes. Nothing is enqueued to measure.
    """
    now = now or timezone.now()
    if _missing_cache_tables():
        return Check("clock", OK, _("No worker heartbeat to compare clocks with (skipped)."))
    try:
        stats = Stat.get_all() or []
    except Exception:
        stats = []
    stamps = [(s.host, s.timestamp) for s in stats if getattr(s, "timestamp", None)]
    if not stamps:
        return Check("clock", OK, _("No worker heartbeat to compare clocks with (skipped)."))
    worst_host, worst = max(((h, t - now) for h, t in stamps), key=lambda item: abs(item[1]))
    if abs(worst) > CLOCK_SKEW_TOLERANCE:
        return Check("clock", WARNING, _("The clock of worker host %(host)s is %(seconds)+.0f s off this host's.")
                     % {"host": worst_host, "seconds": worst.total_seconds()},
                     _("Run NTP (chrony or systemd-timesyncd) on every host."))
    return Check("clock", OK, _("Worker clocks agree with this host's (within %(n)d s).")
                 % {"n": int(CLOCK_SKEW_TOLERANCE.total_seconds())})


def run_checks(*, probe: bool = True) -> list[Check]:
    checks = [check_migrations()]
    if checks[0].level == ERROR:
        return checks  # the other checks read tables that may not exist yet
    checks.append(check_workers(wait=probe))
    if checks[-1].level != ERROR:
        checks.append(check_pumps())  # no workers, no pumps: the workers' check says it
    checks.extend(check_backends(probe=probe))
    checks.append(check_media())
    checks.extend(check_security())
    checks.append(check_shared_cache())
    checks.append(check_clock_skew())
    return checks


def healthy(checks: list[Check]) -> bool:
    return all(c.level != ERROR for c in checks)
