"""Every script in bench/ runs, prints its figures and leaves nothing behind.

Each script found in bench/ (a new one is picked up by the glob, and fails here until it
has a smoke run below) runs as a real subprocess at tiny sizes, in a session of its own,
with its own TMPDIR and a marker in its environment that every process it starts
inherits. Afterwards no process may carry the marker or sit in its process group, its
TMPDIR must be empty, and a database may remain only where the script says it keeps it
for reuse (admin_scale), in which case a rerun must reuse it.

On the PostgreSQL pass (DATABASE_URL=postgres://...) the scripts' databases go on that
server under names of their own, dropped at the end; otherwise they are SQLite files.
Nothing here times anything: the scripts' speed targets are for runs by hand.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# Modules whose name starts with "_" are the scripts' shared helpers, not scripts.
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))
MARKER_VAR = "EASEL_BENCH_SMOKE"
# Generous: a stuck script fails the test instead of hanging it (not a speed target).
RUN_TIMEOUT = 300


@dataclass
class Run:
    returncode: int
    output: str


@dataclass
class Bench:
    """Runs bench scripts and checks what they leave behind."""

    tmp: Path
    pg_server: str | None  # postgres://user@host:port/ (no database) on the PostgreSQL pass
    databases: list[str] = field(default_factory=list)

    # databases

    def database_url(self, name: str) -> str:
        if self.pg_server:
            url = f"{self.pg_server}easel_bench_smoke_{os.getpid()}_{name}"
        else:
            url = f"sqlite:///{self.tmp / name}.sqlite3"
        self.databases.append(url)
        return url

    def exists(self, url: str) -> bool:
        if url.startswith("sqlite"):
            return Path(urlparse(url).path).exists()
        with self._pg_server_conn(url) as conn:
            name = urlparse(url).path.lstrip("/")
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None

    def create(self, url: str) -> None:
        if url.startswith("sqlite"):
            sqlite3.connect(urlparse(url).path).close()
            return
        from psycopg import sql

        with self._pg_server_conn(url) as conn:
            name = urlparse(url).path.lstrip("/")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def execute(self, url: str, statement: str) -> None:
        if url.startswith("sqlite"):
            with contextlib.closing(sqlite3.connect(urlparse(url).path)) as conn, conn:
                conn.execute(statement)
            return
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    def drop_all(self) -> None:
        for url in self.databases:
            if url.startswith("sqlite"):
                continue  # in tmp_path
            from psycopg import sql

            with self._pg_server_conn(url) as conn:
                name = urlparse(url).path.lstrip("/")
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @staticmethod
    def _pg_server_conn(url: str):
        import psycopg

        return psycopg.connect(urlunparse(urlparse(url)._replace(path="/postgres")), autocommit=True)

    # runs

    def run(self, script: str, *args: str, interrupt_after: str | None = None) -> Run:
        """Run bench/<script>; with `interrupt_after`, press Ctrl+C (SIGINT to its process
        group, as a terminal does) once that text has been printed."""
        marker = uuid.uuid4().hex
        tmpdir = self.tmp / f"tmp-{marker[:8]}"
        tmpdir.mkdir()
        env = {k: v for k, v in os.environ.items()
               # The test process's own database and folders are not the bench's.
               if k not in ("DATABASE_URL", "BENCH_DATABASE_URL", "EASEL_DATA_DIR", "MEDIA_ROOT")}
        env.update({MARKER_VAR: marker, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"})
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        lines: list[str] = []
        seen = threading.Event()

        def read() -> None:
            for line in proc.stdout:
                lines.append(line)
                if interrupt_after and interrupt_after in line:
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            if interrupt_after:
                if not seen.wait(RUN_TIMEOUT):
                    pytest.fail(f"{script} never printed {interrupt_after!r}:\n{''.join(lines)}")
                os.killpg(proc.pid, signal.SIGINT)
            proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script} still running after {RUN_TIMEOUT} s:\n{''.join(lines)}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(10)
        output = "".join(lines)
        self._assert_nothing_left(script, proc.pid, marker, tmpdir, output)
        return Run(proc.returncode, output)

    def _assert_nothing_left(self, script: str, pgid: int, marker: str, tmpdir: Path, output: str) -> None:
        left = _processes_of(pgid, marker)
        # A process killed at the very end may take a moment to be gone; give it that.
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = _processes_of(pgid, marker)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"{script} left processes running: {left}\n{output}"
        leftovers = sorted(p.name for p in tmpdir.iterdir())
        assert not leftovers, f"{script} left temporary files: {leftovers}\n{output}"


def _processes_of(pgid: int, marker: str) -> dict[int, str]:
    """Live processes in the script's process group or carrying its marker: {pid: command}."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after_name = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, group = after_name[0], int(after_name[2])
            if state in ("Z", "X"):
                continue  # already dead, waiting to be reaped
            ours = group == pgid or needle in (entry / "environ").read_bytes().split(b"\0")
            if ours:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue  # gone meanwhile, or somebody else's
    return found


@pytest.fixture
def bench(tmp_path):
    url = os.environ.get("DATABASE_URL", "")
    server = urlunparse(urlparse(url)._replace(path="/")) if url.startswith("postgres") else None
    b = Bench(tmp_path, server)
    yield b
    b.drop_all()


def table_rows(output: str) -> dict[str, tuple[float, int]]:
    """admin_scale's table: {page: (median ms, queries)}."""
    rows = {}
    for label, ms, queries in re.findall(r"^(.+?)\s+\|\s+(\d+\.\d)\s+\|\s+(\d+)\s*$", output, re.M):
        rows[label] = (float(ms), int(queries))
    return rows


# --- the smoke run of each script ---------------------------------------------------


def assert_refuses_foreign_database(bench: Bench, script: str, *args: str) -> None:
    """Pointed at anybody else's database, the script stops and leaves it as it was."""
    foreign = bench.database_url(f"not_a_bench_{script.removesuffix('.py')}")
    bench.create(foreign)
    bench.execute(foreign, "CREATE TABLE precious (id integer)")
    refused = bench.run(script, "--database-url", foreign, *args)
    assert refused.returncode != 0, refused.output
    assert "only reuses or drops databases it created" in refused.output, refused.output
    assert bench.exists(foreign), f"{script} dropped a database it did not create"
    bench.execute(foreign, "INSERT INTO precious (id) VALUES (1)")  # the table is still there


def smoke_admin_scale(bench: Bench) -> None:
    url = bench.database_url("admin")
    sizes = ["--database-url", url, "--tasks", "300", "--images", "60", "--users", "12"]
    holds = "{'users': 12, 'tasks': 300, 'images': 60}"

    # --slow-ms inf: the exit status says whether it ran, not how fast this machine is.
    first = bench.run("admin_scale.py", *sizes, "--runs", "1", "--slow-ms", "inf")
    assert first.returncode == 0, first.output
    assert "fill: filled" in first.output and holds in first.output, first.output
    assert re.search(r"^rollup: \d+ run\(s\) wrote [1-9]\d* rows", first.output, re.M), first.output
    assert re.search(r"^300 tasks; heavy user bench_\d+ has \d+$", first.output, re.M), first.output
    pages = table_rows(first.output)
    for label in ("task list", "task list ?status=failed", "task list ?q=lighthouse", "task list ?p=6",
                  "user list", "dashboard ?days=7", "dashboard ?days=30"):
        assert label in pages, (label, first.output)
    assert any(label.startswith("task change #") for label in pages), first.output
    assert any(label.startswith("API history (") for label in pages), first.output
    assert all(queries > 0 for _ms, queries in pages.values()), first.output
    assert "0 page(s) at or over inf ms" in first.output, first.output

    # Kept for reuse, as documented: the next run takes it as it is.
    assert bench.exists(url)
    again = bench.run("admin_scale.py", *sizes, "--fill-only")
    assert again.returncode == 0, again.output
    assert f"fill: reused ({holds})" in again.output and "fill: filled" not in again.output, again.output

    # A run stopped half-way leaves no manifest (the fill commits it last); rows it
    # did not take back must not stop the next run, which starts over.
    bench.execute(url, "UPDATE easel_bench SET manifest = NULL")
    recovered = bench.run("admin_scale.py", *sizes, "--fill-only")
    assert recovered.returncode == 0, recovered.output
    assert "stopped before its fill was complete" in recovered.output, recovered.output
    assert "fill: filled" in recovered.output and holds in recovered.output, recovered.output

    # A database filled before databases were marked (only bench users in it) is taken
    # over; asked for other sizes, it holds a new fill of those, not the old one.
    bench.execute(url, "DROP TABLE easel_bench")
    earlier = bench.run("admin_scale.py", *sizes[:2], "--tasks", "200", "--images", "30", "--users", "5",
                        "--fill-only")
    assert earlier.returncode == 0, earlier.output
    assert "made by an earlier version of this script" in earlier.output, earlier.output
    assert "fill: filled" in earlier.output, earlier.output
    assert "{'users': 5, 'tasks': 200, 'images': 30}" in earlier.output, earlier.output

    assert_refuses_foreign_database(bench, "admin_scale.py", "--tasks", "300", "--fill-only")


def smoke_dispatch(bench: Bench) -> None:
    sizes = ["--engines", "1", "--tasks", "6", "--users", "2", "--prompt-seconds", "0.2", "--steps", "2"]
    # On the PostgreSQL pass it makes and drops a database of its own; otherwise its SQLite
    # database is in its temporary folder, which must be gone too.
    url = bench.database_url("dispatch") if bench.pg_server else None
    database = ["--database-url", url] if url else []

    result = bench.run("dispatch.py", *sizes, *database)
    assert result.returncode == 0, result.output
    out = result.output
    assert re.search(r"^completed=6 failed=0$", out, re.M), out
    assert re.search(r"^makespan=\d+\.\d+s ideal=\d+\.\d+s efficiency=\d+\.\d+ ", out, re.M), out
    assert re.search(r"^idle gap between prompts per backend: p50=\d+\.\dms p95=\d+\.\dms \(n=5\)$", out, re.M), out
    assert re.search(r"^backend finished -> task completed with thumbnail: p50=-?\d+ms p95=-?\d+ms$", out, re.M), out
    assert re.search(r"^fairness: .* = \d+\.\d+s while the heavy user had 5 tasks queued$", out, re.M), out
    if url:
        assert not bench.exists(url), "dispatch left its database behind"

    # Ctrl+C with every process up: all of them stopped, the folder and database gone
    # (checked by run() and below), and the exit status says it was interrupted.
    # A run long enough not to end first (with the pump, six tiny tasks can finish
    # between the line and the signal).
    long_run = ["--engines", "1", "--tasks", "200", "--users", "2", "--prompt-seconds", "0.5", "--steps", "2"]
    stopped = bench.run("dispatch.py", *long_run, *database, interrupt_after="web and qcluster up")
    assert stopped.returncode != 0, stopped.output
    assert "completed=" not in stopped.output, stopped.output
    if url:
        assert not bench.exists(url), "dispatch left its database behind after Ctrl+C"

    assert_refuses_foreign_database(bench, "dispatch.py", *sizes)


def smoke_capacity(bench: Bench) -> None:
    sizes = ["--engines", "1", "--tasks", "10", "--users", "2"]
    url = bench.database_url("capacity") if bench.pg_server else None
    database = ["--database-url", url] if url else []

    result = bench.run("capacity.py", *sizes, *database, "--direct-fetch")
    assert result.returncode == 0, result.output
    out = result.output
    assert re.search(r"^easel: completed=10 failed=0 in \d+\.\d+s = \d+\.\d+ tasks/s .*load average: ", out, re.M), out
    assert re.search(r"^engine finished -> task completed: p50=-?\d+ms p95=-?\d+ms \(n=10\)$", out, re.M), out
    assert re.search(r"^engine idle between Easel's prompts: p50=\d+ms p95=\d+ms \(n=9\)$", out, re.M), out
    memory = re.search(r"^easel memory \(PSS, engines excluded\): idle=(\d+\.\d)MB peak=(\d+\.\d)MB$", out, re.M)
    assert memory and 0 < float(memory[1]) <= float(memory[2]), out
    # Both of Easel's processes, each with the workers it started (gunicorn's two at least).
    assert re.search(r"^  gunicorn \(pid \d+\): [3-9]\d* process\(es\), \d+\.\dMB ", out, re.M), out
    assert re.search(r"^  qcluster \(pid \d+\): [3-9]\d* process\(es\), \d+\.\dMB ", out, re.M), out
    assert re.search(r"^direct: completed=10 in \d+\.\d+s = \d+\.\d+ tasks/s \(2 queued per engine; each image fetched; ",
                     out, re.M), out
    assert re.search(r"^direct CPU per prompt: the engines \d+\.\dms, the client \d+\.\dms$", out, re.M), out
    assert re.search(r"^easel/direct = \d+\.\d{3}$", out, re.M), out
    if url:
        assert not bench.exists(url), "capacity left its database behind"

    skipped = bench.run("capacity.py", *sizes, *database, "--skip-direct")
    assert skipped.returncode == 0, skipped.output
    assert "easel: completed=10 failed=0" in skipped.output, skipped.output
    assert "direct:" not in skipped.output and "easel/direct" not in skipped.output, skipped.output

    # Ctrl+C with every process up: everything stopped and gone (checked by run()).
    long_run = ["--engines", "1", "--tasks", "2000", "--users", "2"]  # not over before the signal
    stopped = bench.run("capacity.py", *long_run, *database, "--skip-direct", interrupt_after="web and qcluster up")
    assert stopped.returncode != 0, stopped.output
    assert "easel: completed=" not in stopped.output, stopped.output
    if url:
        assert not bench.exists(url), "capacity left its database behind after Ctrl+C"

    assert_refuses_foreign_database(bench, "capacity.py", *sizes)


def smoke_api_overhead(bench: Bench) -> None:
    sizes = ["--seconds", "0.3", "--rounds", "1", "--clients", "2", "--workers", "1"]
    url = bench.database_url("api_overhead") if bench.pg_server else None
    database = ["--database-url", url] if url else []

    result = bench.run("api_overhead.py", *sizes, *database)
    assert result.returncode == 0, result.output
    out = result.output
    for target in ("bare", "status", "history"):
        assert re.search(rf"^{target} +\d+\.\d req/s \(rounds: \d+\) p50=\d+\.\dms p95=\d+\.\dms$", out, re.M), out
    assert re.search(r"^status/bare = \d+\.\d{3} \(target: at least 0\.5\)$", out, re.M), out
    assert re.search(r"^history/bare = \d+\.\d{3}$", out, re.M), out
    if url:
        assert not bench.exists(url), "api_overhead left its database behind"

    # Ctrl+C with gunicorn up: stopped and gone (checked by run()).
    stopped = bench.run("api_overhead.py", "--seconds", "30", *database, interrupt_after="gunicorn up")
    assert stopped.returncode != 0, stopped.output
    assert "status/bare" not in stopped.output, stopped.output
    if url:
        assert not bench.exists(url), "api_overhead left its database behind after Ctrl+C"

    assert_refuses_foreign_database(bench, "api_overhead.py", *sizes)


def smoke_viewers(bench: Bench) -> None:
    sizes = ["--viewers", "4", "--tasks", "2", "--users", "2", "--seconds", "1.5"]
    url = bench.database_url("viewers") if bench.pg_server else None
    database = ["--database-url", url] if url else []

    result = bench.run("viewers.py", *sizes, *database)
    assert result.returncode == 0, result.output
    out = result.output
    assert re.search(r"^web memory idle: \d+\.\dMB$", out, re.M), out
    number = r" *\d+\.\d"
    # So short a run may see no step change at all on a slow machine (the bench says so).
    delay = r"progress delay(?: p50=\d+ms p95=\d+ms|: none seen)"
    assert re.search(rf"^polling  req/s={number} queries/s={number} \(second half: \d+\.\d\) updates seen/s={number} "
                     rf"request p50=\d+ms p95=\d+ms {delay} "
                     r"web memory peak=\d+\.\dMB$", out, re.M), out
    assert re.search(rf"^stream   req/s={number} queries/s={number} \(second half: \d+\.\d\) updates seen/s={number} "
                     rf"streams open=4 {delay} "
                     r"web memory peak=\d+\.\dMB$", out, re.M), out
    if url:
        assert not bench.exists(url), "viewers left its database behind"


SMOKE = {
    "admin_scale.py": smoke_admin_scale,
    "api_overhead.py": smoke_api_overhead,
    "capacity.py": smoke_capacity,
    "dispatch.py": smoke_dispatch,
    "viewers.py": smoke_viewers,
}


def test_the_glob_finds_the_bench_scripts():
    # Guards the discovery itself: a moved folder or a changed pattern must not make
    # the parametrized test below silently run nothing.
    assert {"admin_scale.py", "api_overhead.py", "capacity.py", "dispatch.py", "viewers.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_runs_and_leaves_nothing_behind(script, bench):
    smoke = SMOKE.get(script)
    if smoke is None:
        pytest.fail(f"bench/{script} has no smoke run: add one to SMOKE in tests/test_bench.py "
                    "(tiny sizes, the figures it prints, what it may keep)")
    smoke(bench)
