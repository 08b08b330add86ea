"""`manage.py studio`: the whole studio in one command (web, worker, demo engine), supervised.

Each child runs in a process group of its own, so everything it starts (the qcluster's
sentinel and workers, gunicorn's workers) is stopped with it: a child that dies is
restarted with a log line, after clearing whatever it left running; when the studio
stops, every child and grandchild stops too. Pages are served with DEBUG off unless
the environment says DEBUG=1: the studio is what people put on their network.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from models_catalog.services import backend_ensure, catalog_sync

# A child that dies again this soon after starting is restarted after a growing pause
# (up to MAX_BACKOFF), so a broken configuration does not spin.
STABLE_AFTER = 30.0
MAX_BACKOFF = 30.0
STOP_GRACE = 15.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: a new session of its own, and SIGTERM when the studio
    process dies, even by SIGKILL (Linux; elsewhere the studio's own stop covers it)."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    label: str
    argv: list[str]
    env: dict
    ready_line: str | None = None  # a line it prints once it serves
    proc: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = 1.0
    restarts: int = field(default=0)


class Command(BaseCommand):
    help = "Run the web server (gunicorn), the django-q2 cluster and the built-in demo engine together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("EASEL_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("EASEL_PORT", "8000")))
        parser.add_argument("--no-demo-engine", action="store_true", help="Do not start the demo engine.")

    def handle(self, *args, host, port, no_demo_engine, **options):
        call_command("setup", stdout=self.stdout)
        self.children: list[Child] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        env = self._child_env()
        # Static files as the children will serve them (with DEBUG off: hashed names).
        subprocess.run(manage + ["collectstatic", "--noinput", "-v0"], env=env, check=True)
        try:
            if settings.EASEL_DEMO_ENGINE and not no_demo_engine:
                engine_port = settings.EASEL_DEMO_ENGINE_PORT
                engine = self._start(Child("engine", manage + ["demo_engine", "--port", str(engine_port)], env,
                                           ready_line="listening"))
                if engine.proc.poll() is not None:
                    raise CommandError("the demo engine did not start")
                demo = backend_ensure(name="demo", base_url=f"http://127.0.0.1:{engine_port}", is_demo=True)
                self.stdout.write(f"Catalog sync: {catalog_sync(backends=[demo])}")
            self._start(Child("worker", manage + ["qcluster"], env))
            # gunicorn's settings live in one place, deploy/gunicorn.conf.py, read from the
            # environment; here only where to listen and, on a laptop, two workers.
            web_env = {**env, "EASEL_HOST": host, "EASEL_PORT": str(port),
                       "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2")}
            web_env.pop("GUNICORN_BIND", None)
            self._start(Child("web", [sys.executable, "-m", "gunicorn", "--config",
                                      str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"),
                                      "config.asgi:application"], web_env))
            self.stdout.write(self.style.SUCCESS(f"Easel is running at http://{host}:{port}/  (Ctrl+C to stop)"))
            self.stdout.flush()
            while not self.stopping:
                for child in self.children:
                    if child.proc.poll() is not None and not self.stopping:
                        self._restart(child)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()

    @staticmethod
    def _child_env() -> dict:
        env = dict(os.environ)
        # Off unless asked for: Django's debug pages list every URL to anonymous visitors.
        env.setdefault("DEBUG", "0")
        return env

    def _log(self, message: str) -> None:
        self.stdout.write(f"[studio] {message}")
        self.stdout.flush()

    def _start(self, child: Child) -> Child:
        child.proc = subprocess.Popen(
            child.argv, cwd=settings.BASE_DIR, env=child.env, text=True, preexec_fn=_die_with_parent,
            stdout=subprocess.PIPE if child.ready_line else None,
        )
        child.started = time.monotonic()
        if child not in self.children:
            self.children.append(child)
        self._log(f"started {child.label} (pid {child.proc.pid})")
        if child.ready_line:
            self._forward(child)
        return child

    def _forward(self, child: Child) -> None:
        """Wait for the child's ready line, then keep copying its output (the pipe must never fill)."""
        proc = child.proc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            self.stdout.write(f"[{child.label}] {line.rstrip()}")
            if child.ready_line in line:
                break

        def pump():
            for line in proc.stdout:
                sys.stdout.write(f"[{child.label}] {line}")

        threading.Thread(target=pump, daemon=True).start()

    def _restart(self, child: Child) -> None:
        code = child.proc.returncode
        # Whatever it started may still run (a qcluster killed by SIGKILL leaves its
        # sentinel and workers behind): its process group goes with it.
        _kill_group(child.proc.pid, signal.SIGKILL)
        quick = time.monotonic() - child.started < STABLE_AFTER
        child.backoff = min(child.backoff * 2, MAX_BACKOFF) if quick else 1.0
        child.restarts += 1
        self._log(f"{child.label} exited with {code}; restarting it in {child.backoff:.0f} s")
        deadline = time.monotonic() + child.backoff
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.1)
        if not self.stopping:
            self._start(child)

    def _on_signal(self, signum, frame):
        self.stopping = True
        raise KeyboardInterrupt

    def _stop_all(self) -> None:
        self.stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(self.children):
            if child.proc.poll() is None:
                # To the child itself, which stops its own in order (gunicorn its workers;
                # the qcluster lets each job end, and a pump hands over when it sees its
                # cluster stopping). A SIGTERM to the whole group would kill django-q2's
                # sentinel mid-step and can leave the qcluster waiting on it for ever.
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Grandchildren that outlived their parent (or ignored SIGTERM) go now.
            _kill_group(child.proc.pid, signal.SIGKILL)
        self._log("stopped")


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
