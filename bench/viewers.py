"""Many people watching their tasks: the task page's event stream against its polling.

N viewers (signed-in sessions, as the task page has) watch T running tasks of U users,
whose progress a stand-in for the pump writes every 0.5 s as the pump does (one UPDATE for
all of them, and the owners' events through generation.events). The same web process as
deployed (gunicorn with deploy/gunicorn.conf.py, uvicorn's worker, one worker) serves
two rounds of --seconds each:

- polling: each viewer asks what the task page asks once a second without a stream, the
  status API and the page's state.json;
- stream: each viewer holds one `GET /api/v1/events` open and reads its events.

For each it prints the requests per second the web process answered, the SQL statements
per second it ran (counted inside it: bench/_viewers_site.py), the updates the viewers
saw per second, the delay from a progress write (its commit, in the stand-in for the
pump) to each viewer seeing that step (p50/p95: from the event for the stream, from the
first state.json that shows it for polling, so polling's includes its one-second
interval), and the web process's memory (PSS, its process tree). The queries of the
second half of a round leave out the streams' connects (each reads its session once). Run
by hand:

    .venv/bin/python bench/viewers.py --viewers 1000 --seconds 20

It works in a temporary folder with its own SQLite database (or, with --database-url, a
PostgreSQL database it creates and drops) and stops everything it started when it ends.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from _support import ROOT, bench_run, bench_env, free_port, manage_shell, pct, start_gunicorn
from capacity import memory

SETUP = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from generation.models import GenerationTask
from generation import transitions
users = [get_user_model().objects.create_user(f"viewer{i}", password="x" * 12) for i in range(USERS)]
for i in range(TASKS):
    user = users[i % len(users)]
    task = GenerationTask.objects.create(user=user, prompt="a lighthouse", model_name="demo", width=64, height=64,
                                         steps=1000, cfg=7, sampler="euler", scheduler="normal", seed=i,
                                         status="processing", progress_max=1000)
    print("TASK", task.pk, user.pk)
for user in users:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "accounts.backends.UsernameOrEmailBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    print("SESSION", user.pk, session.session_key)
"""

# The pump's progress writes, for every running task, each interval, until told to stop.
DRIVER = """
import time
from pathlib import Path
from django.db.models import F
from generation.events import tasks_progressed
from generation.models import GenerationTask
ids = list(GenerationTask.objects.filter(status="processing").values_list("pk", flat=True))
stop = Path({stop!r})
written = open({log!r}, "a", buffering=1)
step = 0
while not stop.exists():
    GenerationTask.objects.filter(pk__in=ids).update(progress_value=(F("progress_value") + 1) % 1000)
    tasks_progressed(ids)
    step = (step + 1) % 1000  # every task is at this step now (they all started at 0)
    written.write(f"{{step}} {{time.time()}}\\n")  # committed: the events are readable
    time.sleep({interval})
"""


def delays(seen: list[tuple[int, float]], log: Path) -> list[float]:
    """Seconds from each step's write to each sighting of it (a step's value comes back
    after 1,000 writes: the latest write of it before the sighting counts)."""
    writes: dict[int, list[float]] = {}
    for line in log.read_text().splitlines():
        value, at = line.split()
        writes.setdefault(int(value), []).append(float(at))
    out = []
    for value, at in seen:
        before = [w for w in writes.get(value, ()) if w <= at]
        if before:
            out.append(at - before[-1])
    return out


def queries_so_far(folder: Path) -> int:
    """SQL statements the web process has run (bench/_viewers_site.py writes them)."""
    total = 0
    for path in folder.glob("queries.*"):
        try:
            total += int(path.read_text() or 0)
        except (OSError, ValueError):
            pass
    return total


async def poll(session, base: str, task_id: int, until: float, stats: dict) -> None:
    # The task page without a stream: the status API, then the page's state.json, each second.
    last = None
    while time.monotonic() < until:
        started = time.monotonic()
        for path in (f"/api/v1/generation/status/{task_id}", f"/tasks/{task_id}/state.json"):
            try:
                async with session.get(base + path) as response:
                    body = await response.read()
                    stats["requests"] += 1
                    stats["bad"] += response.status != 200
                    if path.endswith("state.json") and response.status == 200:
                        stats["updates"] += 1
                        value = json.loads(body)["progress"]["value"]
                        if value is not None and value != last:
                            last = value
                            stats["seen"].append((value, time.time()))
            except aiohttp.ClientError:
                stats["bad"] += 1
            stats["latency"].append(time.monotonic() - started)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def watch(session, base: str, until: float, stats: dict) -> None:
    try:
        async with session.get(base + "/api/v1/events", timeout=aiohttp.ClientTimeout(total=None)) as response:
            stats["requests"] += 1
            if response.status != 200:
                stats["bad"] += 1
                return
            stats["open"] += 1
            progress = False
            while time.monotonic() < until:
                try:
                    line = await asyncio.wait_for(response.content.readline(), max(0.01, until - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if not line:
                    break
                if line.startswith(b"event: progress"):
                    stats["updates"] += 1
                    progress = True
                elif line.startswith(b"data: ") and progress:
                    stats["seen"].append((json.loads(line[6:])["value"], time.time()))
                    progress = False
    except aiohttp.ClientError:
        stats["bad"] += 1


async def round_of(kind: str, base: str, viewers: list[tuple[int, str]], seconds: float) -> dict:
    stats = {"requests": 0, "bad": 0, "updates": 0, "open": 0, "latency": [], "seen": []}
    connector = aiohttp.TCPConnector(limit=0)
    sessions = [aiohttp.ClientSession(base, connector=connector, connector_owner=False, cookies={"sessionid": key})
                for _task, key in viewers]
    until = time.monotonic() + seconds
    try:
        if kind == "polling":
            jobs = [poll(s, "", task, until, stats) for s, (task, _key) in zip(sessions, viewers)]
        else:
            jobs = [watch(s, "", until, stats) for s in sessions]
        await asyncio.gather(*jobs)
    finally:
        for session in sessions:
            await session.close()
        await connector.close()
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100, help="running tasks watched (viewers share them)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each round")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                        help="a PostgreSQL database to create for the run and drop after it "
                             "(default: SQLite in the run's temporary folder)")
    args = parser.parse_args()
    if args.viewers < 1 or args.tasks < 1 or args.users < 1 or args.seconds <= 0:
        parser.error("positive sizes")
    with bench_run("viewers", args.database_url) as (work, procs, database_url):
        return run(args, work, procs, database_url)


def run(args, work: Path, procs, database_url: str) -> int:
    env = bench_env(work, database_url)
    manage_shell(env, "from django.core.management import call_command; call_command('migrate', verbosity=0)")
    out = manage_shell(env, SETUP.replace("USERS", str(min(args.users, args.tasks))).replace("TASKS", str(args.tasks)))
    tasks = [line.split()[1:] for line in out.splitlines() if line.startswith("TASK ")]
    sessions = dict(line.split()[1:] for line in out.splitlines() if line.startswith("SESSION "))
    # Each viewer watches one task, with its owner's session.
    viewers = [(int(tasks[i % len(tasks)][0]), sessions[tasks[i % len(tasks)][1]]) for i in range(args.viewers)]

    counts = work / "counts"
    counts.mkdir()
    port = free_port()
    web_env = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT / "bench"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   DJANGO_SETTINGS_MODULE="_viewers_site", EASEL_BENCH_QUERY_COUNTS=str(counts),
                   GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1",
                   GUNICORN_CONTROL_SOCKET=str(work / "gunicorn.ctl"), LOG_LEVEL="warning",
                   # Many viewers share each user here (a crowd watching a few users' tasks).
                   EASEL_EVENTS_STREAMS_PER_USER="0")
    base = f"http://127.0.0.1:{port}"
    web = start_gunicorn(procs, web_env, base)
    stop = work / "driver.stop"
    procs.start("driver", [sys.executable, "manage.py", "shell", "-c",
                           DRIVER.format(stop=str(stop), log=str(work / "progress.log"), interval=0.5)], cwd=ROOT, env=env)
    print(f"web up on 127.0.0.1:{port} (1 uvicorn worker); viewers={args.viewers} tasks={args.tasks} "
          f"users={min(args.users, args.tasks)} seconds={args.seconds:g}; database: {database_url.split(':', 1)[0]}",
          flush=True)
    idle_kb = memory({"web": web.pid})["web"][0]
    print(f"web memory idle: {idle_kb / 1024:.1f}MB", flush=True)

    bad = 0
    for kind in ("polling", "stream"):
        before = queries_so_far(counts)
        started = time.monotonic()
        peak = [0]
        half = [None]  # (time, statements) half way: the second half is past the connects

        async def sampled():
            task = asyncio.ensure_future(round_of(kind, base, viewers, args.seconds))
            while not task.done():
                peak[0] = max(peak[0], memory({"web": web.pid})["web"][0])
                if half[0] is None and time.monotonic() - started >= args.seconds / 2:
                    half[0] = (time.monotonic(), queries_so_far(counts))
                await asyncio.sleep(0.5)
            return task.result()

        stats = asyncio.run(sampled())
        elapsed = time.monotonic() - started
        time.sleep(0.6)  # the counts file is written twice a second
        now_queries = queries_so_far(counts)
        queries = now_queries - before
        at, then = half[0] or (started, before)
        steady = (now_queries - then) / max(0.001, time.monotonic() - 0.6 - at)
        latency = (f" request p50={pct(stats['latency'], .5) * 1000:.0f}ms p95={pct(stats['latency'], .95) * 1000:.0f}ms"
                   if stats["latency"] else f" streams open={stats['open']}")
        delay = delays(stats["seen"], work / "progress.log")
        latency += (f" progress delay p50={pct(delay, .5) * 1000:.0f}ms p95={pct(delay, .95) * 1000:.0f}ms"
                    if delay else " progress delay: none seen")
        print(f"{kind:8s} req/s={stats['requests'] / elapsed:8.1f} queries/s={queries / elapsed:8.1f} "
              f"(second half: {steady:.1f}) "
              f"updates seen/s={stats['updates'] / elapsed:8.1f}{latency} "
              f"web memory peak={peak[0] / 1024:.1f}MB", flush=True)
        bad += stats["bad"]
    stop.touch()
    if bad:
        print(f"{bad} request(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
