"""Dispatch benchmark: K demo engines, M tasks from U users, through the real web API
(gunicorn) and a real qcluster. Run by hand; not a test.

    .venv/bin/python bench/dispatch.py --engines 2 --tasks 200 --users 10 --prompt-seconds 0.5

Prints:
- makespan against the ideal (M x per-prompt time / K) as an efficiency ratio;
- the idle gap on each backend between consecutive prompts (p50/p95), from the engines'
  own execution timestamps;
- the time from a backend finishing a prompt to the task being `completed` with its
  thumbnail (p50/p95);
- fairness: the longest wait of a one-task user while the heavy user had work queued.

User 0 is "heavy" (submits M - (U - 1) tasks first); users 1..U-1 submit one each
right after, which is what fairness is about.

Everything the run makes is its own and goes away when it ends, also on Ctrl+C, SIGTERM
or an error: a temporary folder (media, logs and, by default, the SQLite database), the
processes (each engine, gunicorn, the qcluster), and with `--database-url` a PostgreSQL
database created for the run and dropped after it (one left by a run that was killed
outright is dropped and made again; a database the bench did not create is never used).
Exits 1 when a task did not complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _support import BenchDatabase, Processes, exit_on_termination, signals_held

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--prompt-seconds", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                        help="a PostgreSQL database to create for the run and drop after it "
                             "(default: SQLite in the run's temporary folder)")
    args = parser.parse_args()
    if args.engines < 1 or args.users < 1 or args.tasks < args.users or args.steps < 1:
        parser.error("at least 1 engine, 1 user, 1 step, and no fewer tasks than users")

    exit_on_termination()
    work = Path(tempfile.mkdtemp(prefix="easel-bench-dispatch-"))
    procs = Processes(work / "logs")
    scratch = None
    try:
        if args.database_url:
            database = BenchDatabase(args.database_url, script="dispatch")
            # Exits, before the database counts as the run's (and is dropped at the end),
            # when it is somebody else's.
            if database.claim() == "ours":
                print(f"{database.describe()}: left by an earlier run; dropping it and starting over")
                database.reset()
            scratch = database
            database_url = args.database_url
        else:
            database_url = f"sqlite:///{work / 'bench.sqlite3'}"
        return run(args, work, procs, database_url)
    except Exception:
        print(procs.log_tails(), file=sys.stderr)
        raise
    finally:
        with signals_held():
            procs.stop()
            if scratch is not None:
                scratch.drop()
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, procs: Processes, database_url: str) -> int:
    env = dict(os.environ)
    (work / "tmp").mkdir()
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
        Q_WORKERS=str(args.engines * 2 + 2),
        Q_POLL="0.1",
        EASEL_PROGRESS_WRITE_INTERVAL="0.5",
        # The bench client polls hard; the per-user API rate limit is not what is measured.
        EASEL_API_RATE_USER="1000000/min",
    )
    py = sys.executable

    def shell(code: str) -> str:
        """Run Python in `manage.py shell` on the bench's database; its output."""
        done = subprocess.run([py, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"manage.py shell exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    # Per prompt: the sampler steps plus 6 light nodes of 10 ms each.
    step_delay = max(0.0, (args.prompt_seconds - 0.06) / args.steps)
    engines = []
    for i in range(args.engines):
        port = free_port()
        procs.start(
            f"engine{i}",
            [py, "-m", "generation.demo_engine", "--port", str(port), "--step-delay", f"{step_delay:.4f}",
             "--node-delay", "0.01", "--output-dir", str(work / f"engine{i}" / "output"),
             "--input-dir", str(work / f"engine{i}" / "input")],
            cwd=ROOT, env=env,
        )
        engines.append((f"engine{i}", f"http://127.0.0.1:{port}"))
    for name, _url in engines:
        procs.wait_for_output(name, "listening")
    engines = [url for _name, url in engines]
    print(f"engines: {len(engines)} up", flush=True)
    # One Django start-up for the schema and the catalog, users and tokens.
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
        f"for i in range({args.users}):\n"
        "    u=User.objects.create_user(username=f'bench{i}', password='bench-password-123',"
        " daily_image_quota=100000, max_concurrent_tasks=1000)\n"
        "    print(token_create(user=u)[1])\n"
    )
    out = shell(setup)
    tokens = [line.strip() for line in out.splitlines() if line.strip()][-args.users:]
    web_port = free_port()
    procs.start(
        "gunicorn",
        [py, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
         "--workers", "2", "--threads", "4"],
        cwd=ROOT, env=env,
    )
    procs.start("qcluster", [py, "manage.py", "qcluster"], cwd=ROOT, env=env)
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

    sessions = [requests.Session() for _ in tokens]
    for session, token in zip(sessions, tokens):
        session.headers["Authorization"] = f"Bearer {token}"
    heavy = args.tasks - (args.users - 1)
    plan = [0] * heavy + list(range(1, args.users))
    ids: list[tuple[int, int]] = []
    started = time.time()
    for user in plan:
        r = sessions[user].post(f"{base}/generation/create-async",
                                json={"prompt": f"bench {len(ids)}", "steps": args.steps}, timeout=30)
        r.raise_for_status()
        ids.append((user, r.json()["id"]))
    submit_seconds = time.time() - started
    print(f"submitted {len(ids)} tasks in {submit_seconds:.1f} s", flush=True)
    pending = {task_id: user for user, task_id in ids}
    results: dict[int, dict] = {}
    limit = 60 + args.tasks * args.prompt_seconds * 3
    while pending and time.time() - started < limit:
        for task_id, user in list(pending.items()):
            body = sessions[user].get(f"{base}/generation/status/{task_id}", timeout=30).json()
            if "error" in body:
                raise RuntimeError(f"status of task {task_id}: {body['error']}")
            if body["status"] in ("completed", "failed", "cancelled"):
                results[task_id] = body
                del pending[task_id]
        time.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} of {len(ids)} task(s) still unfinished after {limit:.0f} s")
    failed = {t: b for t, b in results.items() if b["status"] != "completed"}

    # Engine-side timings: execution_start .. execution_success per prompt.
    runs = []
    for url in engines:
        history = requests.get(f"{url}/history", params={"max_items": 100000}, timeout=30).json()
        for prompt_id, entry in history.items():
            messages = {name: data for name, data in entry["status"]["messages"]}
            if "execution_start" in messages and "execution_success" in messages:
                runs.append((url, prompt_id, messages["execution_start"]["timestamp"] / 1000,
                             messages["execution_success"]["timestamp"] / 1000))
    if not runs:
        raise RuntimeError("the engines ran no prompt to the end")
    gaps = []
    for url in engines:
        mine = sorted((s, e) for u, _p, s, e in runs if u == url)
        gaps += [max(0.0, b[0] - a[1]) for a, b in zip(mine, mine[1:])]
    durations = [e - s for _u, _p, s, e in runs]
    per_prompt = statistics.mean(durations)
    first_start = min(s for _u, _p, s, _e in runs)
    last_end = max(e for _u, _p, _s, e in runs)

    stats = shell(
        "from generation.models import GenerationTask as T\n"
        "for t in T.objects.filter(status='completed'):\n"
        "    print('ROW', t.pk, t.user.username, str(t.prompt_id), t.created_at.timestamp(),"
        " t.submitted_at.timestamp(), t.completed_at.timestamp())\n"
    )
    rows = [line.split()[1:] for line in stats.splitlines() if line.startswith("ROW ")]
    if not rows:
        raise RuntimeError(f"no task completed: {list(failed.values())[:3]}")
    end_by_prompt = {p: e for _u, p, _s, e in runs}
    finish_lag = [float(r[5]) - end_by_prompt[r[2]] for r in rows if r[2] in end_by_prompt]
    last_completed = max(float(r[5]) for r in rows)
    light_waits = [float(r[4]) - float(r[3]) for r in rows if r[1] != "bench0"]

    makespan = last_completed - started
    ideal = args.tasks * per_prompt / args.engines
    print(f"engines={args.engines} tasks={args.tasks} users={args.users} steps={args.steps} "
          f"per-prompt={per_prompt:.3f}s (engine-measured) submit={submit_seconds:.1f}s")
    print(f"completed={len(rows)} failed={len(failed)}")
    print(f"makespan={makespan:.2f}s ideal={ideal:.2f}s efficiency={ideal / makespan:.3f} "
          f"(engine busy span {last_end - first_start:.2f}s: efficiency {ideal / (last_end - first_start):.3f})")
    print(f"idle gap between prompts per backend: p50={pct(gaps, .5) * 1000:.1f}ms "
          f"p95={pct(gaps, .95) * 1000:.1f}ms (n={len(gaps)})")
    print(f"backend finished -> task completed with thumbnail: p50={pct(finish_lag, .5) * 1000:.0f}ms "
          f"p95={pct(finish_lag, .95) * 1000:.0f}ms")
    print(f"fairness: longest wait of a one-task user (created -> submitted) = "
          f"{max(light_waits) if light_waits else float('nan'):.2f}s while the heavy user had "
          f"{heavy} tasks queued")
    for task_id, body in list(failed.items())[:5]:
        print(f"task {task_id} {body['status']}: {body.get('error_code', '')} {body.get('error_message', '')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
