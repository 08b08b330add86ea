"""`manage.py studio`: the whole studio in one command (web, worker, demo engine)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from accounts.services import staff_ensure
from models_catalog.services import backend_ensure, backends_from_settings, checkpoints_sync


class Command(BaseCommand):
    help = "Run the web server (gunicorn), the django-q2 cluster and the built-in demo engine together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("EASEL_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("EASEL_PORT", "8000")))
        parser.add_argument("--no-demo-engine", action="store_true", help="Do not start the demo engine.")

    def handle(self, *args, host, port, no_demo_engine, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        created = staff_ensure()
        if created:
            username, password = created
            if password:
                self.stdout.write(self.style.WARNING(
                    f"Created staff account '{username}' with password: {password}\n"
                    "  (shown once; change it under Account > Password)"
                ))
            else:
                self.stdout.write(f"Created staff account '{username}' (password from EASEL_ADMIN_PASSWORD).")

        self.children: list[subprocess.Popen] = []
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        try:
            backends_from_settings()
            if settings.EASEL_DEMO_ENGINE and not no_demo_engine:
                engine_port = settings.EASEL_DEMO_ENGINE_PORT
                engine = self._spawn("engine", manage + ["demo_engine", "--port", str(engine_port)], wait_for="listening")
                backend_ensure(name="demo", base_url=f"http://127.0.0.1:{engine_port}", is_demo=True)
                if engine.poll() is not None:
                    raise CommandError("the demo engine did not start")
            summary = checkpoints_sync()
            self.stdout.write(f"Checkpoint sync: {summary}")
            self._spawn("worker", manage + ["qcluster"])
            # gunicorn's settings live in one place, deploy/gunicorn.conf.py, read from the
            # environment; here only where to listen and, on a laptop, two workers.
            web_env = {**os.environ, "EASEL_HOST": host, "EASEL_PORT": str(port),
                       "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2")}
            web_env.pop("GUNICORN_BIND", None)
            self._spawn(
                "web",
                [sys.executable, "-m", "gunicorn", "--config", str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"),
                 "config.wsgi:application"],
                env=web_env,
            )
            self.stdout.write(self.style.SUCCESS(f"Easel is running at http://{host}:{port}/  (Ctrl+C to stop)"))
            self.stdout.flush()
            while True:
                for child in self.children:
                    if child.poll() is not None:
                        raise CommandError(f"{child.args[2] if len(child.args) > 2 else child.args} exited with {child.returncode}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()

    def _spawn(self, label: str, argv: list[str], wait_for: str | None = None, env: dict | None = None
               ) -> subprocess.Popen:
        child = subprocess.Popen(
            argv, cwd=settings.BASE_DIR, stdout=subprocess.PIPE if wait_for else None, text=True, env=env
        )
        self.children.append(child)
        if wait_for:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                self.stdout.write(f"[{label}] {line.rstrip()}")
                if wait_for in line:
                    break
            # Keep forwarding its output so the pipe never fills up.
            import threading

            def pump():
                for line in child.stdout:
                    sys.stdout.write(f"[{label}] {line}")

            threading.Thread(target=pump, daemon=True).start()
        return child

    def _on_signal(self, signum, frame):
        raise KeyboardInterrupt

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
