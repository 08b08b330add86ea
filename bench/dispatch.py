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
import statistics
import sys
import time

import requests
from _support import (bench_env, bench_run, completed_task_rows, engine_runs, pct, prepare_database,
                      start_engines, start_web_and_cluster)


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
    with bench_run("dispatch", args.database_url) as (work, procs, database_url):
        return run(args, work, procs, database_url)


def run(args, work, procs, database_url: str) -> int:
    # The studio's own defaults (workers, broker poll, pumps): what a team runs is measured.
    env = bench_env(work, database_url)
    # Per prompt: the sampler steps plus 6 light nodes of 10 ms each.
    step_delay = max(0.0, (args.prompt_seconds - 0.06) / args.steps)
    engines = start_engines(procs, work, env, args.engines, step_delay=step_delay, node_delay=0.01)
    print(f"engines: {len(engines)} up", flush=True)
    tokens = prepare_database(env, engines, args.users)
    base = start_web_and_cluster(procs, env)

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
    runs = engine_runs(engines)
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

    rows = completed_task_rows(env)
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
