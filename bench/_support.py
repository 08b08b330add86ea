"""What the bench scripts share: stopping what they start however a run ends, and
databases that are theirs to reuse or drop. Not a benchmark itself (the leading
underscore keeps it out of the scripts tests/test_bench.py runs).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dj_database_url
import requests

ROOT = Path(__file__).resolve().parent.parent

MARKER_TABLE = "easel_bench"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# --- signals ------------------------------------------------------------------------


def exit_on_termination() -> None:
    """SIGTERM and SIGHUP end Python on the spot by default, skipping every `finally`
    (and so the cleanup of what the script started); make them raise SystemExit instead,
    as Ctrl+C already raises KeyboardInterrupt."""

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)


@contextlib.contextmanager
def signals_held():
    """Cleanup runs to the end: a second Ctrl+C (or a SIGTERM) while processes are being
    stopped would otherwise abandon the rest of them. A signal that arrived meanwhile is
    raised once the cleanup is done."""
    arrived: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: arrived.append(signum)) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if arrived:
        if arrived[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + arrived[0])


# --- processes ----------------------------------------------------------------------


class Processes:
    """The processes one bench run starts. Each gets its own session, so a Ctrl+C in the
    terminal reaches only the bench, which then stops them itself: SIGTERM to each leader
    (gunicorn and django-q2 stop their own workers in order), then SIGKILL to whatever is
    left in each process group. Output goes to a log file per process, shown when the
    run fails."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], **popen) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        self.procs[name] = proc
        return proc

    def wait_for_output(self, name: str, needle: str, timeout: float = 30) -> None:
        proc, log = self.procs[name], self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in log.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before printing {needle!r}")
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not print {needle!r} within {timeout:.0f} s")

    def stop(self, timeout: float = 15) -> None:
        with signals_held():
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + timeout
            for proc in self.procs.values():
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            for proc in self.procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by their leader
                proc.wait()
            self.procs.clear()

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- databases ----------------------------------------------------------------------


class BenchDatabase:
    """A database (PostgreSQL or SQLite file) that a bench script owns.

    The script creates it and at once adds a table naming itself, plus, once its data is
    complete, what the data is (the manifest, written in the same transaction as the
    data). So a later run can tell a database it may reuse or drop from anybody else's:
    one that has tables but no marker, or another script's marker, is never touched.
    """

    def __init__(self, url: str, script: str, earlier_version_sql: str | None = None):
        """`earlier_version_sql`: a query whose first value is true only in a database an
        earlier version of the script made, before databases were marked."""
        self.url = url
        self.script = script
        self.earlier_version_sql = earlier_version_sql
        self.config = dj_database_url.parse(url)
        self.engine = self.config["ENGINE"].rsplit(".", 1)[-1]
        if self.engine not in ("sqlite3", "postgresql"):
            raise SystemExit(f"{url}: bench databases are PostgreSQL or SQLite")
        self.name = str(self.config["NAME"])

    # connections

    def _pg(self, dbname: str):
        import psycopg

        c = self.config
        return psycopg.connect(
            dbname=dbname, user=c.get("USER") or None, password=c.get("PASSWORD") or None,
            host=c.get("HOST") or None, port=c.get("PORT") or None, autocommit=True,
        )

    def _connect(self):
        if self.engine == "sqlite3":
            import sqlite3

            return contextlib.closing(sqlite3.connect(self.name, isolation_level=None))
        return self._pg(self.name)

    def _sqlite_files(self) -> list[Path]:
        base = Path(self.name)
        return [base, *(base.with_name(base.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]

    # state

    def exists(self) -> bool:
        if self.engine == "sqlite3":
            return Path(self.name).exists()
        with self._pg("postgres") as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]).fetchone() is not None

    def _tables(self, conn) -> set[str]:
        if self.engine == "sqlite3":
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        else:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
        return {r[0] for r in rows}

    def _marker(self) -> tuple[str, str | None] | None:
        """(script, manifest) from the marker table; None when there is no table at all;
        script "" when tables are there but no marker (somebody else's database), and
        "<script>?" when an earlier version of this script made them."""
        with self._connect() as conn:
            tables = self._tables(conn)
            if MARKER_TABLE not in tables:
                if not tables:
                    return None
                return (f"{self.script}?" if self._earlier_version(conn) else "", None)
            row = conn.execute(f"SELECT script, manifest FROM {MARKER_TABLE}").fetchone()
        return (row[0], row[1]) if row else ("", None)

    def _earlier_version(self, conn) -> bool:
        if not self.earlier_version_sql:
            return False
        try:
            row = conn.execute(self.earlier_version_sql).fetchone()
        except Exception:  # the tables it reads are missing: not that script's database
            return False
        return bool(row and row[0])

    def manifest(self) -> dict | None:
        marker = self._marker()
        return json.loads(marker[1]) if marker and marker[1] else None

    # changes

    def claim(self) -> str:
        """Make sure the database exists and is this script's; say what was found
        ("created", "empty", "ours", or "earlier" for one an earlier version of the script
        made, now marked). Exits when it belongs to something else."""
        if not self.exists():
            self._create()
            return "created"
        try:
            marker = self._marker()
        except Exception as exc:  # not a database at all (e.g. some other file): not ours either
            raise SystemExit(f"{self.describe()}: cannot read it ({exc}); pick another --database-url") from exc
        if marker is None:
            self._mark()
            return "empty"
        if marker[0] == f"{self.script}?":
            self._mark()
            return "earlier"
        if marker[0] != self.script:
            owner = f"bench/{marker[0]}.py" if marker[0] else "something other than a bench script"
            raise SystemExit(
                f"{self.describe()} holds tables made by {owner}; this script only reuses or drops "
                f"databases it created. Pick another --database-url (or drop that database yourself)."
            )
        return "ours"

    def reset(self) -> None:
        """Drop the database and create it empty again (only ever called once it is ours)."""
        self.drop()
        self._create()

    def drop(self) -> None:
        if self.engine == "sqlite3":
            for path in self._sqlite_files():
                path.unlink(missing_ok=True)
            return
        from psycopg import sql

        with self._pg("postgres") as conn:
            # FORCE: a connection the run left open (a worker still exiting) must not keep it.
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.name)) + force)

    def _create(self) -> None:
        if self.engine == "sqlite3":
            Path(self.name).parent.mkdir(parents=True, exist_ok=True)
        else:
            from psycopg import sql

            with self._pg("postgres") as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self._mark()

    def _mark(self) -> None:
        with self._connect() as conn:
            conn.execute(f"CREATE TABLE {MARKER_TABLE} (script varchar(100) NOT NULL, manifest text)")
            conn.execute(f"INSERT INTO {MARKER_TABLE} (script) VALUES ('{self.script}')")

    def describe(self) -> str:
        return f"database {self.name}" if self.engine == "postgresql" else f"SQLite database {self.name}"


def write_manifest(cursor, manifest: dict) -> None:
    """Record, through the caller's (Django) connection and inside its transaction, what
    the database now holds: a run stopped before the commit leaves no manifest behind."""
    cursor.execute(f"UPDATE {MARKER_TABLE} SET manifest = %s", [json.dumps(manifest, sort_keys=True)])


# --- figures ------------------------------------------------------------------------


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all held open while choosing, or an engine not yet
    listening could see its port handed to the next one (seen with 32 engines)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --- an Easel of the run's own ------------------------------------------------------
#
# The way dispatch.py and capacity.py bring up what they measure: demo engines, the
# schema with the engines registered and their catalog synced, bench users with tokens,
# then gunicorn and a qcluster, each a process of the run's `Processes`.


def bench_env(work: Path, database_url: str, **overrides: str) -> dict:
    """The environment of every process the run starts."""
    env = dict(os.environ)
    (work / "tmp").mkdir(exist_ok=True)
    env.update(
        EASEL_DATA_DIR=str(work),
        # What the processes put in temporary folders goes with the run's own folder (the
        # demo engine, for one, never removes the one it makes for its temp files).
        TMPDIR=str(work / "tmp"),
        # Set even when the caller's environment names another database: the bench only
        # ever writes to its own.
        DATABASE_URL=database_url,
        DEBUG="0",
        EASEL_DEMO_ENGINE="0",
        # The bench client polls hard; the per-user API rate limit is not what is measured.
        EASEL_API_RATE_USER="1000000/min",
    )
    env.update(overrides)
    return env


def manage_shell(env: dict, code: str) -> str:
    """Run Python in `manage.py shell` on the bench's database; its output."""
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"manage.py shell exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def start_engines(procs: Processes, work: Path, env: dict, count: int, *, step_delay: float,
                  node_delay: float) -> list[str]:
    """`count` demo engines, each on a free port; their base URLs once all listen."""
    started = []
    for i, port in enumerate(free_ports(count)):
        procs.start(
            f"engine{i}",
            [sys.executable, "-m", "generation.demo_engine", "--port", str(port), "--step-delay", f"{step_delay:.4f}",
             "--node-delay", f"{node_delay:.4f}", "--output-dir", str(work / f"engine{i}" / "output"),
             "--input-dir", str(work / f"engine{i}" / "input")],
            cwd=ROOT, env=env,
        )
        started.append((f"engine{i}", f"http://127.0.0.1:{port}"))
    for name, _url in started:
        procs.wait_for_output(name, "listening")
    return [url for _name, url in started]


def prepare_database(env: dict, engines: list[str], users: int) -> list[str]:
    """One Django start-up for the schema, the engines as backends with their catalog
    synced (64 x 64 by default), and `users` bench users; their API tokens."""
    setup = (
        "from django.core.management import call_command\n"
        "call_command('migrate', interactive=False, verbosity=0)\n"
        "call_command('createcachetable', verbosity=0)\n"
        "from models_catalog.services import backend_ensure, catalog_sync\n"
        "from models_catalog.models import Checkpoint\n"
        "from django.contrib.auth import get_user_model\n"
        "from accounts.services import token_create\n"
        f"bs=[backend_ensure(name=f'bench{{i}}', base_url=u) for i,u in enumerate({engines!r})]\n"
        "catalog_sync(backends=bs)\n"
        "Checkpoint.objects.update(default_width=64, default_height=64)\n"
        "User=get_user_model()\n"
        f"for i in range({users}):\n"
        "    u=User.objects.create_user(username=f'bench{i}', password='bench-password-123',"
        " daily_image_quota=100000, max_concurrent_tasks=1000)\n"
        "    print(token_create(user=u)[1])\n"
    )
    out = manage_shell(env, setup)
    return [line.strip() for line in out.splitlines() if line.strip()][-users:]


def start_gunicorn(procs: Processes, env: dict, base: str, *, ready_path: str = "/api/v1/health/live"):
    """gunicorn as the run command starts it (deploy/gunicorn.conf.py), no access log; its
    process once `ready_path` answers 200 (60 s at most)."""
    web = procs.start("gunicorn", [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "deploy" / "gunicorn.conf.py"),
                                   "--access-logfile", "/dev/null", "config.asgi:application"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(base + ready_path, timeout=1).status_code == 200:
                return web
        except requests.RequestException:
            pass
        if web.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {web.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not answer within 60 s")
        time.sleep(0.2)


def start_web_and_cluster(procs: Processes, env: dict) -> str:
    """gunicorn and a qcluster as `manage.py studio` starts them (deploy/gunicorn.conf.py,
    WEB_CONCURRENCY 2 unless the environment says otherwise; on PostgreSQL its pool of
    connections); the API's base URL once the health check sees a worker."""
    web_port = free_port()
    web_env = {**env, "WEB_CONCURRENCY": env.get("WEB_CONCURRENCY", "2"), "GUNICORN_BIND": f"127.0.0.1:{web_port}"}
    procs.start(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "config.asgi:application"],
        cwd=ROOT, env=web_env,
    )
    procs.start("qcluster", [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{web_port}/api/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/health", timeout=1).json()["checks"]["worker"]["ok"]:
                break
        except (requests.RequestException, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the web server or the qcluster did not come up within 60 s")
        time.sleep(0.2)
    print(f"web and qcluster up on 127.0.0.1:{web_port}", flush=True)
    return base


def engine_runs(engines: list[str]) -> list[tuple[str, str, float, float]]:
    """(engine, prompt_id, execution start, execution success) of every prompt the
    engines ran to the end, from their own history (epoch seconds)."""
    runs = []
    for url in engines:
        history = requests.get(f"{url}/history", params={"max_items": 1000000}, timeout=60).json()
        for prompt_id, entry in history.items():
            messages = {name: data for name, data in entry["status"]["messages"]}
            if "execution_start" in messages and "execution_success" in messages:
                runs.append((url, prompt_id, messages["execution_start"]["timestamp"] / 1000,
                             messages["execution_success"]["timestamp"] / 1000))
    return runs


def completed_task_rows(env: dict) -> list[list[str]]:
    """[id, username, prompt_id, created, submitted, completed] (epoch seconds) of every
    completed task."""
    out = manage_shell(
        env,
        "from generation.models import GenerationTask as T\n"
        "for t in T.objects.filter(status='completed').select_related('user'):\n"
        "    print('ROW', t.pk, t.user.username, str(t.prompt_id), t.created_at.timestamp(),"
        " t.submitted_at.timestamp(), t.completed_at.timestamp())\n",
    )
    return [line.split()[1:] for line in out.splitlines() if line.startswith("ROW ")]


@contextlib.contextmanager
def bench_run(script: str, database_url: str = ""):
    """What one run owns, gone when it ends (also on Ctrl+C, SIGTERM or an error): a
    temporary folder (media, logs and, by default, the SQLite database), the processes,
    and with `database_url` a PostgreSQL database created for the run and dropped after
    it (one left by a run that was killed outright is dropped and made again; a database
    the bench did not create is never used). Yields (folder, processes, database URL);
    on an error, the tail of every process's log is printed."""
    exit_on_termination()
    work = Path(tempfile.mkdtemp(prefix=f"easel-bench-{script}-"))
    procs = Processes(work / "logs")
    scratch = None
    try:
        if database_url:
            database = BenchDatabase(database_url, script=script)
            # Exits, before the database counts as the run's (and is dropped at the end),
            # when it is somebody else's.
            if database.claim() == "ours":
                print(f"{database.describe()}: left by an earlier run; dropping it and starting over")
                database.reset()
            scratch = database
        else:
            database_url = f"sqlite:///{work / 'bench.sqlite3'}"
        yield work, procs, database_url
    except Exception:
        print(procs.log_tails(), file=sys.stderr)
        raise
    finally:
        with signals_held():
            procs.stop()
            if scratch is not None:
                scratch.drop()
            shutil.rmtree(work, ignore_errors=True)
