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
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

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


def wait_line(proc: subprocess.Popen, needle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"process did not print {needle!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--prompt-seconds", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    env = dict(os.environ)
    env.update(
        EASEL_DATA_DIR=str(work),
        DEBUG="0",
        EASEL_DEMO_ENGINE="0",
        Q_WORKERS=str(args.engines * 2 + 2),
        Q_POLL="0.1",
        EASEL_PROGRESS_WRITE_INTERVAL="0.5",
        # The bench client polls hard; the per-user API rate limit is not what is measured.
        EASEL_API_RATE_USER="1000000/min",
    )
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    py = sys.executable
    procs: list[subprocess.Popen] = []

    def manage(*argv: str) -> None:
        subprocess.run([py, "manage.py", *argv], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    try:
        manage("migrate", "--noinput")
        manage("createcachetable")
        # Per prompt: the sampler steps plus 6 light nodes of 10 ms each.
        step_delay = max(0.0, (args.prompt_seconds - 0.06) / args.steps)
        engines = []
        for i in range(args.engines):
            port = free_port()
            proc = subprocess.Popen(
                [py, "-m", "generation.demo_engine", "--port", str(port), "--step-delay", f"{step_delay:.4f}",
                 "--node-delay", "0.01", "--output-dir", str(work / f"engine{i}")],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
            )
            procs.append(proc)
            wait_line(proc, "listening")
            engines.append(f"http://127.0.0.1:{port}")
        setup = (
            "from models_catalog.services import backend_ensure, checkpoints_sync\n"
            "from models_catalog.models import Checkpoint\n"
            "from django.contrib.auth import get_user_model\n"
            "from accounts.services import token_create\n"
            f"bs=[backend_ensure(name=f'bench{{i}}', base_url=u) for i,u in enumerate({engines!r})]\n"
            "checkpoints_sync(backends=bs)\n"
            "Checkpoint.objects.update(default_width=64, default_height=64)\n"
            "User=get_user_model()\n"
            f"for i in range({args.users}):\n"
            "    u=User.objects.create_user(username=f'bench{i}', password='bench-password-123',"
            " daily_image_quota=100000, max_concurrent_tasks=1000)\n"
            "    print(token_create(user=u)[1])\n"
        )
        out = subprocess.run([py, "manage.py", "shell", "-c", setup], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
        tokens = [line.strip() for line in out.splitlines() if line.strip()][-args.users:]
        web_port = free_port()
        web = subprocess.Popen(
            [py, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
             "--workers", "2", "--threads", "4"],
            cwd=ROOT, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        procs.append(web)
        cluster = subprocess.Popen([py, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(cluster)
        base = f"http://127.0.0.1:{web_port}/api/v1"
        for _ in range(100):
            try:
                if requests.get(f"{base}/health", timeout=1).json()["checks"]["worker"]["ok"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)

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
        pending = {task_id: user for user, task_id in ids}
        results: dict[int, dict] = {}
        while pending and time.time() - started < 60 + args.tasks * args.prompt_seconds * 3:
            for task_id, user in list(pending.items()):
                body = sessions[user].get(f"{base}/generation/status/{task_id}", timeout=30).json()
                if "error" in body:
                    raise RuntimeError(f"status of task {task_id}: {body['error']}")
                if body["status"] in ("completed", "failed", "cancelled"):
                    results[task_id] = body
                    del pending[task_id]
            time.sleep(0.5)
        failed = [t for t, b in results.items() if b["status"] != "completed"]

        # Engine-side timings: execution_start .. execution_success per prompt.
        runs = []
        for url in engines:
            history = requests.get(f"{url}/history", params={"max_items": 100000}, timeout=30).json()
            for prompt_id, entry in history.items():
                messages = {name: data for name, data in entry["status"]["messages"]}
                if "execution_start" in messages and "execution_success" in messages:
                    runs.append((url, prompt_id, messages["execution_start"]["timestamp"] / 1000,
                                 messages["execution_success"]["timestamp"] / 1000))
        gaps = []
        for url in engines:
            mine = sorted((s, e) for u, _p, s, e in runs if u == url)
            gaps += [max(0.0, b[0] - a[1]) for a, b in zip(mine, mine[1:])]
        durations = [e - s for _u, _p, s, e in runs]
        per_prompt = statistics.mean(durations) if durations else args.prompt_seconds
        first_start = min(s for _u, _p, s, _e in runs)
        last_end = max(e for _u, _p, _s, e in runs)

        stats = subprocess.run(
            [py, "manage.py", "shell", "-c",
             "from generation.models import GenerationTask as T\n"
             "for t in T.objects.filter(status='completed'):\n"
             "    print('ROW', t.pk, t.user.username, str(t.prompt_id), t.created_at.timestamp(),"
             " t.submitted_at.timestamp(), t.completed_at.timestamp())\n"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout
        rows = [line.split()[1:] for line in stats.splitlines() if line.startswith("ROW ")]
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
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM) if proc.pid == os.getpgid(proc.pid) else proc.terminate()
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
