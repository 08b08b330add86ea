"""Capacity benchmark: how many tiny tasks a second Easel completes on K demo engines
with no per-step delay, against a client that drives the same engines directly. Run by
hand; not a test.

    .venv/bin/python bench/capacity.py --engines 8 --tasks 500 --users 10

Easel runs as `manage.py studio` runs it: a qcluster with its default workers and pumps
(Q_WORKERS, EASEL_PUMPS, ... from the environment, nothing overridden), and gunicorn with
deploy/gunicorn.conf.py and two workers, as the run command starts it; the engines are registered as backends with their catalog
synced. The N tasks (64 x 64, --steps sampler steps) come from U users through the web
API, each user submitting its share from a thread of its own.

Prints:
- Easel: completed tasks per second (first submission -> last task completed);
- the time from an engine finishing a prompt (its own `execution_success` timestamp) to
  the task being `completed` with its thumbnail (p50/p95), and each engine's idle time
  between two of Easel's prompts (p50/p95);
- the processes Easel runs (gunicorn, the qcluster) and their memory: PSS from
  /proc/<pid>/smaps_rollup summed over each one's process tree (engines excluded), idle
  before the tasks come and at the peak of the run; and the CPU time each used per
  completed task (user + system, over the run), which a busy machine disturbs less
  than the rate;
- direct: the same number of prompts (the built-in txt2img graph, same size and steps)
  posted straight to the engines by a pipelined client that keeps --direct-depth prompts
  queued on each engine and follows their completion over the WebSocket; it runs first,
  before Easel's processes start, so nothing else competes for the CPU; and the ratio
  Easel/direct. `--skip-direct` leaves it out; `--direct-fetch` has it also fetch each
  prompt's image (/history, /view), as any client that wants its pictures must, and as
  Easel does. The CPU the engines and the client spent on it is printed beside it.

The load average (`uptime`) is printed with the figures: the machine may be busy with
other work. Everything the run makes goes away when it ends, as with bench/dispatch.py
(the temporary folder, every process, a PostgreSQL database given by --database-url).
Exits 1 when a task did not complete.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import dj_database_url
import requests
import websocket
from _support import (ROOT, bench_env, bench_run, completed_task_rows, engine_runs, pct, prepare_database,
                      start_engines, start_web_and_cluster)

GRAPH = ROOT / "models_catalog" / "builtin" / "txt2img_api.json"
SIZE = 64
FINISHED = ("completed", "failed", "cancelled")


def load() -> str:
    return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--direct-depth", type=int, default=2,
                        help="prompts the direct client keeps queued on each engine (default 2)")
    parser.add_argument("--skip-direct", action="store_true", help="measure Easel only")
    parser.add_argument("--direct-fetch", action="store_true",
                        help="the direct client also fetches each prompt's image (/history, then /view), "
                             "as a client that wants its pictures must")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                        help="a PostgreSQL database to create for the run and drop after it "
                             "(default: SQLite in the run's temporary folder)")
    args = parser.parse_args()
    if (args.engines < 1 or args.users < 1 or args.tasks < args.users or args.steps < 1
            or args.direct_depth < 1):
        parser.error("at least 1 engine, 1 user, 1 step, a depth of 1, and no fewer tasks than users")
    with bench_run("capacity", args.database_url) as (work, procs, database_url):
        return run(args, work, procs, database_url)


def run(args, work: Path, procs, database_url: str) -> int:
    # Nothing about the workers or the pumps is set here: they are the studio's defaults.
    env = bench_env(work, database_url)
    engines = start_engines(procs, work, env, args.engines, step_delay=0.0, node_delay=0.0)
    print(f"engines: {len(engines)} up (no step or node delay); {load()}", flush=True)

    direct = None
    engine_leaders = {name: proc.pid for name, proc in procs.procs.items() if name.startswith("engine")}
    if not args.skip_direct:
        engines_before, client_before = cpu_seconds(engine_leaders), time.process_time()
        direct = direct_run(engines, args.tasks, args.steps, args.direct_depth, fetch=args.direct_fetch)
        engines_after, client_after = cpu_seconds(engine_leaders), time.process_time()
        direct_cpu = (sum(engines_after.values()) - sum(engines_before.values()), client_after - client_before)
        for url in engines:  # Easel's figures read the engines' history: only its own prompts in it
            requests.post(f"{url}/history", json={"clear": True}, timeout=30).raise_for_status()

    tokens = prepare_database(env, engines, args.users)
    base = start_web_and_cluster(procs, env)
    leaders = {name: procs.procs[name].pid for name in ("gunicorn", "qcluster")}
    idle = settled_memory(leaders)
    sampler = MemorySampler(leaders)
    sampler.start()
    cpu_before = cpu_seconds({**leaders, **engine_leaders})
    try:
        started, submit_seconds, counts = easel_submit_and_wait(base, tokens, database_url, args.tasks,
                                                               args.steps)
    finally:
        sampler.stop()
    end_load = load()
    cpu_after = cpu_seconds({**leaders, **engine_leaders})

    rows = completed_task_rows(env)
    if not rows:
        raise RuntimeError(f"no task completed ({counts})")
    runs = engine_runs(engines)
    end_by_prompt = {p: e for _u, p, _s, e in runs}
    lag = [float(r[5]) - end_by_prompt[r[2]] for r in rows if r[2] in end_by_prompt]
    elapsed = max(float(r[5]) for r in rows) - started
    easel_rate = len(rows) / elapsed
    failed = args.tasks - len(rows)

    print(f"engines={args.engines} tasks={args.tasks} users={args.users} steps={args.steps} size={SIZE}x{SIZE}")
    print(f"easel: completed={len(rows)} failed={failed} in {elapsed:.2f}s = {easel_rate:.2f} tasks/s "
          f"(submitted in {submit_seconds:.1f}s; {end_load})")
    print(f"engine finished -> task completed: p50={pct(lag, .5) * 1000:.0f}ms p95={pct(lag, .95) * 1000:.0f}ms "
          f"(n={len(lag)})")
    # Where the time goes when Easel is slower than the engines: each engine's idle time
    # between the end of one of Easel's prompts and the start of its next.
    gaps = []
    for url in engines:
        mine = sorted((s, e) for u, _p, s, e in runs if u == url)
        gaps += [max(0.0, b[0] - a[1]) for a, b in zip(mine, mine[1:])]
    print(f"engine idle between Easel's prompts: p50={pct(gaps, .5) * 1000:.0f}ms p95={pct(gaps, .95) * 1000:.0f}ms "
          f"(n={len(gaps)})")
    # CPU time per task: steadier than tasks/s on a machine busy with other work.
    print("easel CPU per completed task: " + ", ".join(
        f"{name} {1000 * (cpu_after[name] - cpu_before[name]) / len(rows):.1f}ms" for name in leaders)
        + "; the engines {:.1f}ms".format(
            1000 * sum(cpu_after[n] - cpu_before[n] for n in engine_leaders) / len(rows)))
    peak = sampler.peak or idle
    print(f"easel memory (PSS, engines excluded): idle={mb(idle)}MB peak={mb(peak)}MB")
    for name in leaders:
        print(f"  {name} (pid {leaders[name]}): {len(peak[name][1])} process(es), {peak[name][0] / 1024:.1f}MB "
              f"at the peak ({idle[name][0] / 1024:.1f}MB idle)")
    if direct is not None:
        done, seconds, direct_load = direct
        direct_rate = done / seconds
        print(f"direct: completed={done} in {seconds:.2f}s = {direct_rate:.2f} tasks/s "
              f"({args.direct_depth} queued per engine; "
              f"{'each image fetched' if args.direct_fetch else 'images not fetched'}; {direct_load})")
        print(f"direct CPU per prompt: the engines {1000 * direct_cpu[0] / done:.1f}ms, "
              f"the client {1000 * direct_cpu[1] / done:.1f}ms")
        print(f"easel/direct = {easel_rate / direct_rate:.3f}")
    return 1 if failed else 0


# --- Easel --------------------------------------------------------------------------


def easel_submit_and_wait(base: str, tokens: list[str], database_url: str, tasks: int,
                          steps: int) -> tuple[float, float, dict]:
    """Each user posts its share of the tasks from a thread of its own; then wait until
    every task is finished, watching the database (not the API: status polls would
    compete with the run for the CPU). (start, seconds to submit, counts by status)."""
    shares = [tasks // len(tokens) + (1 if i < tasks % len(tokens) else 0) for i in range(len(tokens))]
    errors: list[str] = []
    latencies: list[float] = []  # each create's answer time, as its client saw it

    def submit(token: str, count: int, user: int) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            for i in range(count):
                sent = time.perf_counter()
                r = session.post(f"{base}/generation/create-async", timeout=60,
                                 json={"prompt": f"capacity {user}-{i}", "steps": steps, "seed": i})
                latencies.append(time.perf_counter() - sent)
                if r.status_code >= 300:
                    errors.append(f"{r.status_code} {r.text[:300]}")
                    return

    threads = [threading.Thread(target=submit, args=(t, n, i), daemon=True)
               for i, (t, n) in enumerate(zip(tokens, shares))]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submit_seconds = time.time() - started
    if errors:
        raise RuntimeError(f"create-async refused {len(errors)} task(s): {errors[0]}")
    print(f"submitted {tasks} tasks in {submit_seconds:.1f} s ({len(tokens)} clients at once; create-async "
          f"p50={pct(latencies, .5) * 1000:.0f}ms p95={pct(latencies, .95) * 1000:.0f}ms)", flush=True)

    limit = 120 + tasks * 1.0
    with _database(database_url) as conn:
        while True:
            counts = dict(conn.execute(
                "SELECT status, count(*) FROM generation_generationtask GROUP BY status").fetchall())
            if sum(counts.get(s, 0) for s in FINISHED) >= tasks:
                return started, submit_seconds, counts
            if time.time() - started > limit:
                raise RuntimeError(f"tasks still unfinished after {limit:.0f} s: {counts}")
            time.sleep(0.2)


@contextlib.contextmanager
def _database(url: str):
    config = dj_database_url.parse(url)
    if config["ENGINE"].endswith("sqlite3"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(config["NAME"], isolation_level=None, timeout=30)) as conn:
            yield conn
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


# --- memory -------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def _tree(pid: int, tree: dict[int, list[int]]) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += tree.get(p, [])
    return pids


def cpu_seconds(leaders: dict[str, int]) -> dict[str, float]:
    """{name: user + system CPU seconds of the leader's process tree so far}."""
    tree, ticks = _children(), os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in leaders.items():
        total = 0
        for p in _tree(pid, tree):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass  # gone meanwhile
        out[name] = total / ticks
    return out


def memory(leaders: dict[str, int]) -> dict[str, tuple[int, list[int]]]:
    """{name: (PSS in kB summed over the leader's process tree, the pids)}."""
    tree = _children()
    out = {}
    for name, pid in leaders.items():
        pids = _tree(pid, tree)
        out[name] = (sum(_pss_kb(p) for p in pids), pids)
    return out


def settled_memory(leaders: dict[str, int], longest: float = 15.0) -> dict[str, tuple[int, list[int]]]:
    """The idle figure, once the cluster's workers and its first pump have started: the
    same processes and a total within 1 % over three samples half a second apart (or
    whatever it is after `longest` seconds)."""
    deadline = time.monotonic() + longest
    samples = [memory(leaders)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples = [*samples[-2:], memory(leaders)]
        totals = [sum(kb for kb, _pids in s.values()) for s in samples]
        same_processes = len({tuple(sorted(p for _kb, pids in s.values() for p in pids)) for s in samples}) == 1
        if len(samples) == 3 and same_processes and max(totals) - min(totals) <= 0.01 * max(totals):
            break
    return samples[-1]


def mb(sample: dict[str, tuple[int, list[int]]]) -> str:
    return f"{sum(kb for kb, _pids in sample.values()) / 1024:.1f}"


class MemorySampler(threading.Thread):
    """Samples Easel's memory every second; keeps the sample with the largest total."""

    def __init__(self, leaders: dict[str, int]):
        super().__init__(daemon=True)
        self.leaders = leaders
        self.peak: dict | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            sample = memory(self.leaders)
            if self.peak is None or sum(v[0] for v in sample.values()) > sum(v[0] for v in self.peak.values()):
                self.peak = sample
            self._halt.wait(1.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# --- direct -------------------------------------------------------------------------


def direct_run(engines: list[str], tasks: int, steps: int, depth: int, *, fetch: bool = False
               ) -> tuple[int, float, str]:
    """The ceiling: `tasks` prompts straight to the engines, `depth` queued on each, each
    engine's next prompt posted as soon as one of its own ends (ComfyUI's end-of-prompt
    marker on the WebSocket: `executing` with no node). With `fetch`, each ended prompt's
    images are then read (/history, /view), after its successor was posted, as Easel
    reads them. (completed, seconds, load)."""
    graph = json.loads(GRAPH.read_text())
    for node in graph.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = steps
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=SIZE, height=SIZE)
    lock = threading.Lock()
    state = {"left": tasks, "done": 0, "fetched": 0}
    errors: list[str] = []

    def take() -> bool:
        with lock:
            if state["left"] <= 0:
                return False
            state["left"] -= 1
            return True

    def drive(url: str) -> None:
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws{url[4:]}/ws?clientId={client_id}", timeout=60)
        session = requests.Session()
        mine: set[str] = set()

        def post() -> None:
            prompt = copy.deepcopy(graph)
            for node in prompt.values():
                if node["class_type"] == "KSampler":
                    node["inputs"]["seed"] = len(mine)
            prompt_id = str(uuid.uuid4())
            mine.add(prompt_id)
            session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id},
                         timeout=60).raise_for_status()

        def fetch_images(prompt_id: str) -> None:
            entry = session.get(f"{url}/history/{prompt_id}", timeout=60).json().get(prompt_id) or {}
            for output in (entry.get("outputs") or {}).values():
                for image in output.get("images") or []:
                    session.get(f"{url}/view", params={k: image.get(k, "") for k in ("filename", "subfolder", "type")},
                                timeout=60).raise_for_status()
                    with lock:
                        state["fetched"] += 1

        try:
            in_flight = 0
            while in_flight < depth and take():
                post()
                in_flight += 1
            while in_flight:
                frame = ws.recv()
                if not isinstance(frame, str):
                    continue  # a preview image
                message = json.loads(frame)
                data = message.get("data") or {}
                if message.get("type") == "execution_error" and data.get("prompt_id") in mine:
                    errors.append(f"{url}: {data.get('exception_message')}")
                if message.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") in mine:
                    in_flight -= 1
                    with lock:
                        state["done"] += 1
                    if take():
                        post()
                        in_flight += 1
                    if fetch:
                        fetch_images(data["prompt_id"])
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            errors.append(f"{url}: {exc!r}")
        finally:
            ws.close()
            session.close()

    threads = [threading.Thread(target=drive, args=(url,), daemon=True) for url in engines]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    if errors:
        raise RuntimeError(f"the direct client failed: {errors[:3]}")
    print(f"direct: {state['done']} prompts in {seconds:.2f} s", flush=True)
    if fetch and state["fetched"] < state["done"]:
        raise RuntimeError(f"the direct client fetched {state['fetched']} images of {state['done']} prompts")
    return state["done"], seconds, load()


if __name__ == "__main__":
    sys.exit(main())
