"""`manage.py studio` (what ./run.sh runs), as real processes: safe pages by default, and a
supervisor that restarts what dies and leaves nothing behind when it stops."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(240)


def serves(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/v1/health/live", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def group_members(pgid: int) -> list[int]:
    """The live processes whose process group is `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class Studio:
    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "studio.log"
        env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "MEDIA_ROOT", "EASEL_ENV")}
        env.update(EASEL_DATA_DIR=str(tmp_path / "data"), EASEL_PORT=str(self.port),
                   EASEL_DEMO_ENGINE_PORT=str(free_port()), EASEL_ADMIN_PASSWORD="correct horse battery",
                   WEB_CONCURRENCY="1", Q_WORKERS="2")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "studio"], cwd=ROOT, env=env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def children(self) -> dict[str, int]:
        """The latest pid of each child, from the studio's own log lines."""
        return {label: int(pid) for label, pid in re.findall(r"\[studio\] started (\w+) \(pid (\d+)\)", self.output())}

    def wait_running(self):
        def up():
            assert self.proc.poll() is None, self.output()[-3000:]
            return "Easel is running" in self.output() and serves(self.url)

        wait_for(up, timeout=150, interval=0.5, message="the studio to serve")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def studio(tmp_path):
    running = Studio(tmp_path)
    yield running
    running.stop()
    for pid in running.children().values():  # never leave a test's processes behind
        for member in group_members(pid):
            os.kill(member, signal.SIGKILL)


def test_the_studio_serves_safely_restarts_what_dies_and_stops_everything(studio):
    studio.wait_running()

    # DEBUG is off unless asked for: a visitor gets the studio's own 404, not Django's debug page.
    missing = requests.get(f"{studio.url}/no/such/page/", timeout=10)
    assert missing.status_code == 404
    assert "Nothing here" in missing.text and "css/easel" in missing.text
    assert "Using the URLconf" not in missing.text and "Django" not in missing.text
    chinese = requests.get(f"{studio.url}/no/such/page/", headers={"Accept-Language": "zh-hans"}, timeout=10)
    assert "这里什么都没有" in chinese.text

    # The worker cluster killed with SIGKILL: its grandchildren go too, and it comes back.
    first = studio.children()
    worker = first["worker"]
    wait_for(lambda: len(group_members(worker)) > 1, timeout=30, message="the qcluster's own processes")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: studio.children()["worker"] != worker, timeout=60, message="the worker to be restarted")
    assert re.search(r"\[studio\] worker exited with -9; restarting", studio.output())
    wait_for(lambda: not group_members(worker), timeout=10, message="the old worker's processes to go")
    assert studio.proc.poll() is None

    # The web server killed too: it comes back and serves again.
    web = studio.children()["web"]
    os.kill(web, signal.SIGKILL)
    wait_for(lambda: studio.children()["web"] != web, timeout=60, message="the web server to be restarted")
    wait_for(lambda: serves(studio.url), timeout=60, message="the restarted web server to serve")

    # Stopping the studio stops every child and grandchild.
    pids = studio.children()
    assert set(pids) == {"engine", "worker", "web"}
    studio.stop()
    assert studio.proc.returncode == 0, studio.output()[-2000:]
    wait_for(lambda: not any(group_members(pid) for pid in pids.values()), timeout=20,
             message="every child process to be gone")
    assert "[studio] stopped" in studio.output()
