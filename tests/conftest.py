"""Shared fixtures: users and API clients, the demo engine on a real port, a real qcluster."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
# Requests, answers and WebSocket traces recorded from a real ComfyUI 0.3.64 (the
# ground truth for the client and the demo engine; docs/comfyui.md describes them).
COMFYUI_CAPTURES = ROOT / "tests" / "fixtures" / "comfyui"

# Media goes to a throw-away folder shared with the helper processes the tests start.
_MEDIA = tempfile.mkdtemp(prefix="easel-test-media-")
os.environ["MEDIA_ROOT"] = _MEDIA


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = _MEDIA


@pytest.fixture(autouse=True)
def _fresh_default_cache():
    """The rate-limit counters live in the default (in-process) cache; SQLite reuses
    user ids after a flush, so without this one test's requests count against the next."""
    from django.core.cache import caches

    caches["default"].clear()
    caches["previews"].clear()  # frames by (task, version): task ids come back after a flush too


@pytest.fixture(autouse=True)
def _language_reset():
    """A request in Chinese leaves Chinese active in this thread (LocaleMiddleware does not
    switch back): the next test starts in the default language whatever ran before it."""
    yield
    from django.utils import translation

    translation.deactivate()


@pytest.fixture(autouse=True)
def _request_threads_let_go():
    """A test that served requests through the ASGI application in this process leaves
    its kept request threads' connections closed (config.asgi): on PostgreSQL an open one
    keeps the test database from being dropped at the end."""
    yield
    served = sys.modules.get("config.asgi")
    if served is not None:
        served.request_threads.close_connections()


@pytest.fixture(autouse=True)
def _catalog_not_remembered(settings):
    """Tests change the catalog with plain UPDATEs (no signal) and create at once: each
    create reads it afresh. What creates remember is tested on its own
    (tests/models_catalog/test_remembered.py)."""
    from models_catalog.remembered import forget

    settings.EASEL_CATALOG_CACHE_SECONDS = 0
    forget()
    # The same for the queue's shape a waiting task's place is read from.
    from generation import outlook

    settings.EASEL_QUEUE_OUTLOOK_SECONDS = 0
    outlook.forget()
    # And whether a pump is alive (a test stops its pump and expects creates to dispatch).
    from generation import services

    services.forget_pump()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- users and clients ------------------------------------------------------------


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    counter = {"n": 0}

    def make(username: str | None = None, **extra):
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        return get_user_model().objects.create_user(
            username=username, password="correct horse battery", email=f"{username}@example.com", **extra
        )

    return make


@pytest.fixture
def operator_group(db):
    """The "studio operator" group as migration 0003 makes it.

    A transactional test's flush empties every table, and only contenttypes and
    permissions come back through post_migrate; the group is made again here so a test
    does not depend on running before the first flush.
    """
    import importlib

    from django.contrib.auth.models import Group, Permission

    made = importlib.import_module("accounts.migrations.0003_studio_operator_group")
    group, created = Group.objects.get_or_create(name=made.GROUP)
    if created:
        for app_label, models in made.PERMISSIONS.items():
            for model, actions in models.items():
                group.permissions.add(*Permission.objects.filter(
                    content_type__app_label=app_label, codename__in=[f"{action}_{model}" for action in actions]))
    return group


@pytest.fixture
def api_client_for():
    from rest_framework.test import APIClient

    from accounts.services import token_create

    def make(user):
        client = APIClient()
        _, token = token_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return make


# --- catalog ----------------------------------------------------------------------


@pytest.fixture
def catalog(db):
    """A backend (not running) with one checkpoint and the built-in template."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, ComfyBackend, WorkflowTemplate

    ensure_builtin_templates(WorkflowTemplate)
    backend = ComfyBackend.objects.create(name="offline", base_url=f"http://127.0.0.1:{free_port()}")
    checkpoint = Checkpoint.objects.create(
        name="demo-sd15", ckpt_name="demo-sd15.safetensors", display_name="Demo SD 1.5", default_steps=4
    )
    checkpoint.backends.add(backend)
    return {"backend": backend, "checkpoint": checkpoint}


# --- the demo engine --------------------------------------------------------------


class Web:
    """The web app as deployed (gunicorn with deploy/gunicorn.conf.py: uvicorn's worker),
    one worker process, on the test database and the cluster's media (MEDIA_ROOT); `env`
    adds to or overrides its environment."""

    def __init__(self, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="easel-web-")
        self.log = Path(self.data) / "web.log"
        self.env = {**cluster_env(), "EASEL_HOST": "127.0.0.1", "EASEL_PORT": str(self.port),
                    "WEB_CONCURRENCY": "1", "EASEL_DATA_DIR": self.data,
                    "GUNICORN_CONTROL_SOCKET": str(Path(self.data) / "g.ctl"),
                    "EASEL_EVENTS_KEEPALIVE_SECONDS": "1",
                    # Its PostgreSQL sessions, told apart from the test's and the workers'.
                    "PGAPPNAME": "easel-test-web", **env}
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py"],
            cwd=ROOT, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return requests.get(f"{self.url}/api/v1/health/live", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, interval=0.2, message="gunicorn")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


class LocalServer:
    """A server of the project's own (the demo engine, the VolcEngine stand-in) as a real
    process on a real port: started with `argv()`, ready once it says "listening"."""

    name = "server"

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        raise NotImplementedError

    def start(self, *extra: str) -> None:
        self.proc = subprocess.Popen(self.argv(*extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "listening" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class DemoEngine(LocalServer):
    """The built-in engine as a real process on a real port, with its fault controls."""

    name = "demo engine"

    def __init__(self, port: int, workdir: Path):
        super().__init__(port)
        self.workdir = workdir

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "generation.demo_engine", "--port", str(self.port),
            "--output-dir", str(self.workdir / "output"), "--input-dir", str(self.workdir / "input"),
            "--step-delay", "0.05", *extra,
        ]

    def faults(self, **values) -> None:
        requests.post(f"{self.url}/demo/faults", json=values, timeout=5).raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/demo/stats", timeout=5).json()


@pytest.fixture
def demo_engine(tmp_path):
    engine = DemoEngine(free_port(), tmp_path)
    engine.start()
    yield engine
    engine.stop()


class VolcStandin(LocalServer):
    """The VolcEngine stand-in as a real process on a real port, with its key pair and fault controls."""

    name = "volcengine stand-in"
    access_key_id = "AKLTtestkey"
    secret_access_key = "test-secret-access-key"

    def __init__(self, port: int):
        super().__init__(port)
        self.host = f"127.0.0.1:{port}"

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "generation.volcengine.standin", "--port", str(self.port),
                "--access-key-id", self.access_key_id, "--secret-access-key", self.secret_access_key,
                "--generate-seconds", "0.3", *extra]

    def faults(self, **values) -> dict:
        response = requests.post(f"{self.url}/standin/faults", json=values, timeout=5)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/standin/stats", timeout=5).json()


@pytest.fixture
def volc_standin():
    standin = VolcStandin(free_port())
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def engine_catalog(transactional_db, demo_engine):
    """The demo engine registered as a backend, with its checkpoints and other files synced."""
    from models_catalog.builtin import ensure_builtin_templates
    from models_catalog.models import Checkpoint, WorkflowTemplate
    from models_catalog.services import backend_ensure, catalog_sync

    ensure_builtin_templates(WorkflowTemplate)
    backend = backend_ensure(name="demo", base_url=demo_engine.url, is_demo=True)
    summary = catalog_sync(backends=[backend])
    assert not summary.errors, summary
    Checkpoint.objects.update(default_steps=6, default_width=64, default_height=64)
    return {"backend": backend, "engine": demo_engine}


# --- a real django-q2 cluster -----------------------------------------------------


def _database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class Cluster:
    # Every cluster running now: a test whose data no job may touch stops them all.
    running: "set[Cluster]" = set()

    def __init__(self, env: dict):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="qcluster-", suffix=".log", delete=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if self.beating(timeout=30):
            Cluster.running.add(self)
            return
        raise RuntimeError("qcluster did not start:\n" + Path(self.log.name).read_text()[-3000:])

    def beating(self, *, timeout: float) -> bool:
        """Whether this cluster's heartbeat is in the cache (one of a cluster stopped a
        moment ago may still be there: its sentinel's parent is the process started here),
        waiting up to `timeout` seconds for it."""
        from django_q.status import Stat

        deadline = time.monotonic() + timeout
        while True:
            if any(stat.pid == self.proc.pid for stat in Stat.get_all()):
                return True
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGTERM to the sentinel alone lets django-q2 stop its workers in order.
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its group
            except ProcessLookupError:
                pass
        self.proc = None
        Cluster.running.discard(self)

    def output(self) -> str:
        return Path(self.log.name).read_text()


def cluster_env() -> dict:
    """The environment of a qcluster process working on the test database."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        MEDIA_ROOT=_MEDIA,
        # django-q2 signs queued payloads with the secret key: both sides need the same.
        SECRET_KEY=settings.SECRET_KEY,
        # Enough workers for two backends with two tasks in flight each, plus one.
        Q_WORKERS="5",
        Q_POLL="0.2",
        EASEL_BACKEND_UNREACHABLE_TIMEOUT="30",
        EASEL_BACKEND_RETRY_MAX_DELAY="1",
        EASEL_BACKEND_HANDBACK_SECONDS="2",
        EASEL_FAILOVER_GRACE_SECONDS="3",
        EASEL_PROGRESS_WRITE_INTERVAL="0.1",
        EASEL_TASK_LEASE_SECONDS="20",
    )
    return env


@pytest.fixture(scope="session")
def _session_cluster(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        cluster = Cluster(cluster_env())
        cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def qcluster(_session_cluster, django_db_blocker):
    """One qcluster process for the session, on the test database (started again if a
    test stopped it: see `no_cluster`)."""
    with django_db_blocker.unblock():
        if _session_cluster.proc is None or _session_cluster.proc.poll() is not None:
            _session_cluster.start()
        # A test's flush empties the heartbeats' cache table too: the next beat (each
        # second) writes this cluster's again; a test reading the workers' state (the
        # doctor, health) must not run in between. A cluster alive but silent that long
        # (a test cut its database connections, or froze it) is replaced.
        elif not _session_cluster.beating(timeout=10):
            _session_cluster.stop()
            _session_cluster.start()
        # A test's flush empties the pumps' rows and the queue (and the tick's schedule),
        # which in a studio only migrations and the tick would make again: a pump for
        # this test, as the tick would queue one.
        from generation.fleet.pump import pumps_ensure

        pumps_ensure()
    return _session_cluster


@pytest.fixture
def no_cluster():
    """No qcluster runs during the test: a test that stages tasks by hand (a task "waiting
    for its backend", a runner half way) must not see the session's cluster run or
    recover them. Every cluster running (the session's, one a test left) is stopped; the next test
    that asks for `qcluster` starts it again (not this one's teardown: a cluster
    starting while the database is flushed can deadlock the flush on PostgreSQL)."""
    for cluster in list(Cluster.running):
        cluster.stop()
    yield


@pytest.fixture(autouse=True)
def _quiet_cluster_before_flush(request):
    """After a test that used the live cluster, let it go idle before the database is
    flushed: a runner still writing while TRUNCATE takes its locks can deadlock on
    PostgreSQL. Unfinished tasks are cancelled (their runners stop within a second).

    Set up after `transactional_db` (requested here), so it is torn down before it.
    """
    if "qcluster" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    from django_q.models import OrmQ

    from generation.models import ACTIVE_STATUSES, GenerationTask, TaskStatus

    GenerationTask.objects.filter(status__in=ACTIVE_STATUSES).update(
        status=TaskStatus.CANCELLED, lease_owner="", lease_until=None
    )
    def short_jobs_queued() -> bool:
        # A pump job stays in the broker while it runs (all session long): not waited for.
        return any(not str(job.name() or "").startswith("easel-pump") for job in OrmQ.objects.all())

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and short_jobs_queued():
        time.sleep(0.1)
    time.sleep(1.5)  # a runner notices the cancel at its next heartbeat (about 1 s)


@pytest.fixture
def make_engine(tmp_path):
    """Start more demo engines (each on its own port) for fleet tests."""
    engines = []

    def make(*extra: str) -> DemoEngine:
        engine = DemoEngine(free_port(), tmp_path / f"engine{len(engines)}")
        engine.start(*extra)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def api_create(client, n: int, **extra) -> list[int]:
    """Create n tasks through the API (`create-async`); their ids."""
    ids = []
    for _ in range(n):
        response = client.post("/api/v1/generation/create-async",
                               {"prompt": "a lighthouse", "model_name": "demo-sd15", **extra}, format="json")
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    return ids


def tasks_finished(ids, timeout: float = 120, interval: float = 0.3) -> dict:
    """Wait until every task of `ids` is completed, failed or cancelled; id → row."""
    from generation.models import GenerationTask

    def done():
        rows = {t.pk: t for t in GenerationTask.objects.filter(pk__in=ids)}
        return rows if all(t.status in ("completed", "failed", "cancelled") for t in rows.values()) else None

    return wait_for(done, timeout=timeout, interval=interval, message="every task to finish")


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
