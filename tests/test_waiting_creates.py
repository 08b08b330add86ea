"""`POST /api/v1/generation/create` waits for its result while holding a web thread; one
user's many waiting creates must not take every thread of a real gunicorn."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import requests

from tests.conftest import ROOT, cluster_env, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

THREADS = 4
WAIT = 12  # seconds a create may wait: long enough to hold its thread throughout the test


@pytest.fixture
def web(catalog):
    """gunicorn as deployed (deploy/gunicorn.conf.py), one worker with four threads, on
    the test database. The catalog's only backend is offline: every task stays pending,
    so a waiting create waits its whole time."""
    port = free_port()
    env = {**cluster_env(), "EASEL_HOST": "127.0.0.1", "EASEL_PORT": str(port), "WEB_CONCURRENCY": "1",
           "GUNICORN_THREADS": str(THREADS), "EASEL_CREATE_WAIT_SECONDS": str(WAIT)}
    env.pop("EASEL_CREATE_WAIT_SLOTS", None)
    env.pop("EASEL_CREATE_WAIT_PER_USER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py", "config.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
        try:
            return requests.get(f"{url}/api/v1/health/live", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=90, interval=0.2, message="gunicorn")
    yield url
    proc.terminate()
    proc.wait(20)


def test_one_users_waiting_creates_leave_threads_for_everyone_else(web, make_user):
    from accounts.services import token_create

    user = make_user("flood")
    user.daily_image_quota = 1000
    user.save()
    _token, clear = token_create(user=user)
    headers = {"Authorization": f"Bearer {clear}"}
    events: list[tuple[str, int]] = []  # (what, HTTP status), in the order they finished
    lock = threading.Lock()

    def create():
        response = requests.post(f"{web}/api/v1/generation/create", json={"prompt": "a lighthouse"},
                                 headers=headers, timeout=WAIT + 30)
        with lock:
            events.append(("create", response.status_code))

    creates = [threading.Thread(target=create) for _ in range(3 * THREADS)]
    for thread in creates:
        thread.start()
    # The creates over the caps answer 202 at once; the waiting ones hold their threads.
    wait_for(lambda: len(events) >= len(creates) - 2, timeout=30, message="the creates over the cap to answer")
    live = requests.get(f"{web}/api/v1/health/live", timeout=WAIT + 30)
    with lock:
        events.append(("live", live.status_code))
    for thread in creates:
        thread.join(WAIT + 30)

    assert live.status_code == 200
    assert [status for what, status in events if what == "create"] == [202] * len(creates)
    # Another client was served while the user's waiting creates still held their threads.
    order = [what for what, _status in events]
    assert order[-3:] == ["live", "create", "create"], order


def test_each_user_gets_their_own_waiting_slots(settings):
    from generation.api.waits import wait_slot

    settings.EASEL_CREATE_WAIT_PER_USER, settings.EASEL_CREATE_WAIT_SLOTS = 2, 3
    with wait_slot(1) as a, wait_slot(1) as b, wait_slot(1) as c, wait_slot(2) as d, wait_slot(3) as e:
        assert (a, b, c, d, e) == (True, True, False, True, False)  # per user, then in all
    with wait_slot(1) as again:
        assert again  # slots are given back when a wait ends
