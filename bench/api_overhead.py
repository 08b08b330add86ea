"""API overhead benchmark: what app clients poll, `GET /api/v1/generation/status/{id}`,
against a bare Django view that reads one row, side by side in the same gunicorn. Run by
hand; not a test.

    .venv/bin/python bench/api_overhead.py --seconds 5 --rounds 3 --clients 8

gunicorn runs as the run command starts it (deploy/gunicorn.conf.py; --workers sets
WEB_CONCURRENCY, default: that file's own), with the product's settings as they are
(DB_CONN_MAX_AGE included, unless --conn-max-age says otherwise) plus one URL of the
benchmark's own: the bare view, defined in bench/_api_overhead_urls.py (named by
bench/_api_overhead_site.py) and nowhere in the product. It reads the task's row and
answers it as JSON, without authentication, DRF or serializers, behind the same
middleware.

What is asked, each by --clients closed-loop client processes on keep-alive connections,
for --seconds per round, the targets taking turns for --rounds rounds (so a busy moment
of the machine falls on all of them):
- bare: the bare view, for a completed task;
- status: the status call for that task (the default template, the graph it sent to
  ComfyUI, one image, one run) with a Bearer token, as the clients poll it;
- history: `GET /api/v1/generation/history` (20 completed tasks of two images each).

Prints each target's requests per second (median of the rounds, and each round) with
its p50/p95 latency, and status/bare and history/bare (the issue's target: status/bare
at least 0.5). The load average is printed too: the machine may be busy with other work.
Everything the run makes goes away when it ends, as with bench/dispatch.py (the
temporary folder, gunicorn, a PostgreSQL database given by --database-url). Exits 1 when
a request was not answered 200.
"""
from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import requests
from _support import ROOT, bench_env, bench_run, free_port, manage_shell, pct, signals_held, start_gunicorn

SETUP = """
from datetime import timedelta
from django.core.management import call_command
call_command('migrate', interactive=False, verbosity=0)
call_command('createcachetable', verbosity=0)
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts.services import token_create
from generation.models import GeneratedImage, GenerationTask, TaskRun
from models_catalog.builtin import ensure_builtin_templates
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import template_default
ensure_builtin_templates(WorkflowTemplate)
template = template_default()
user = get_user_model().objects.create_user(username='bench', password='bench-password-123')
now = timezone.now()
def task(i):
    # As a task the studio ran: its template, and the ComfyUI graph it sent.
    t = GenerationTask.objects.create(
        user=user, prompt=f'a lighthouse at dusk {i}', model_name='demo-sd15', width=64, height=64, steps=4,
        cfg=7, sampler='euler', scheduler='normal', seed=i, status='completed', started_at=now,
        completed_at=now + timedelta(seconds=2), template=template, rendered_prompt=template.graph)
    for index in range(2 if i else 1):
        image = GeneratedImage(task=t, index=index, width=64, height=64, seed=i, size_bytes=1000)
        image.file.name = f'results/bench/{t.pk}-{index}.png'
        image.thumbnail.name = f'thumbnails/bench/{t.pk}-{index}.webp'
        image.save()
    TaskRun.objects.create(task=t, number=1, backend_name='bench0', assigned_at=now, submitted_at=now,
                           started_at=now, ended_at=now + timedelta(seconds=2), outcome='completed')
    return t
for i in range(1, 21):
    task(i)
polled = task(0)
print('TASK', polled.pk)
print('TOKEN', token_create(user=user)[1])
"""


def load() -> str:
    return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _client(port: int, path: str, headers: dict, start: float, stop: float, out) -> None:
    """One closed-loop client on one keep-alive connection: latencies of the requests
    it completed between `start` and `stop` (monotonic), and how many were not 200."""
    # Forked while the bench held its stop signals (measure): a client ends on them as usual.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, bad = [], 0
    while time.monotonic() < start:
        time.sleep(0.001)
    while True:
        began = time.monotonic()
        if began >= stop:
            break
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                bad += 1
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            bad += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.monotonic() - began)
    conn.close()
    out.put((latencies, bad))


def measure(port: int, path: str, headers: dict, clients: int, seconds: float) -> tuple[float, list[float], int]:
    """(requests per second, latencies, non-200 answers) of `clients` processes for `seconds`."""
    out = multiprocessing.Queue()
    start = time.monotonic() + 0.5  # every client forked and connected before the clock starts
    stop = start + seconds
    # Daemons: a Ctrl+C ends them with the bench rather than leaving them to their clock.
    procs = [multiprocessing.Process(target=_client, args=(port, path, headers, start, stop, out), daemon=True)
             for _ in range(clients)]
    # A Ctrl+C that lands inside a fork is swallowed there (logging's fork handler): held
    # until the clients are started, then raised.
    with signals_held():
        for p in procs:
            p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    latencies = [x for lat, _bad in results for x in lat]
    return len(latencies) / seconds, latencies, sum(bad for _lat, bad in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one round of one target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--workers", type=int, default=0,
                        help="gunicorn workers (WEB_CONCURRENCY); default: deploy/gunicorn.conf.py's own")
    parser.add_argument("--conn-max-age", default=None,
                        help="DB_CONN_MAX_AGE for gunicorn; default: the settings' own default")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                        help="a PostgreSQL database to create for the run and drop after it "
                             "(default: SQLite in the run's temporary folder)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.clients < 1:
        parser.error("positive --seconds, at least 1 round and 1 client")
    with bench_run("api_overhead", args.database_url) as (work, procs, database_url):
        return run(args, work, procs, database_url)


def run(args, work: Path, procs, database_url: str) -> int:
    env = bench_env(work, database_url)
    env.pop("DB_CONN_MAX_AGE", None)  # the product's default unless asked
    if args.conn_max_age is not None:
        env["DB_CONN_MAX_AGE"] = str(args.conn_max_age)
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    env.pop("GUNICORN_THREADS", None)
    out = manage_shell(env, SETUP)
    values = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("TASK ", "TOKEN ")))
    task_id, token = int(values["TASK"]), values["TOKEN"].strip()

    port = free_port()
    web_env = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT / "bench"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   DJANGO_SETTINGS_MODULE="_api_overhead_site", GUNICORN_BIND=f"127.0.0.1:{port}",
                   GUNICORN_CONTROL_SOCKET=str(work / "gunicorn.ctl"), LOG_LEVEL="warning")
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "bare": (f"/bench/bare/{task_id}", {}),
        "status": (f"/api/v1/generation/status/{task_id}", auth),
        "history": ("/api/v1/generation/history", auth),
    }
    start_gunicorn(procs, web_env, base, ready_path=targets["bare"][0])
    for name, (path, headers) in targets.items():
        r = requests.get(base + path, headers=headers, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"{name}: {path} answered {r.status_code}: {r.text[:300]}")
    workers = args.workers or "default"
    print(f"gunicorn up on 127.0.0.1:{port} (workers: {workers}; DB_CONN_MAX_AGE: "
          f"{args.conn_max_age if args.conn_max_age is not None else 'default'}); "
          f"database: {database_url.split(':', 1)[0]}", flush=True)

    for path, headers in targets.values():  # warm every worker's imports and connections
        measure(port, path, headers, args.clients, min(1.0, args.seconds))
    rates: dict[str, list[float]] = {name: [] for name in targets}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    bad = 0
    for _round in range(args.rounds):
        for name, (path, headers) in targets.items():
            rate, lat, failed = measure(port, path, headers, args.clients, args.seconds)
            rates[name].append(rate)
            latencies[name] += lat
            bad += failed

    print(f"clients={args.clients} rounds={args.rounds} x {args.seconds:g}s per target; {load()}")
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name in targets:
        rounds = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:8s} {median[name]:8.1f} req/s (rounds: {rounds}) "
              f"p50={pct(latencies[name], .5) * 1000:.1f}ms p95={pct(latencies[name], .95) * 1000:.1f}ms")
    print(f"status/bare = {median['status'] / median['bare']:.3f} (target: at least 0.5)")
    print(f"history/bare = {median['history'] / median['bare']:.3f}")
    if bad:
        print(f"{bad} request(s) not answered 200")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
