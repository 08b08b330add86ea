"""The task page's live panel in Chromium: the script says what the server said, and the
live preview is asked for only once a frame exists.

From the issue "The first week of real users" (what a new user met on the pages):
a task page said "Sent to an image server, about to start" above "Waiting for a free
backend…" with the only backend idle, and every new task logged a 404 for its preview.
"""
from __future__ import annotations

import logging
import re

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in, submit_prompt

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

JS_PREVIEW_LOADED = """() => {
  const img = document.querySelector('img[data-preview]');
  return !!img && img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0;
}"""

# The words of the live panel as a person reads them.
JS_PANEL = """() => {
  const text = (selector) => { const el = document.querySelector(selector); return el ? el.textContent : null; };
  return {
    stage: text('[data-stage]'), queue: text('[data-queue]'), line: text('[data-progress-text]'),
    message: text('[data-status-message]'), status: text('[data-status-text]'), badge: text('[data-status-badge]'),
    panel: document.querySelector('[data-task-live]').innerText,
  };
}"""


def test_the_script_keeps_the_servers_words_for_a_task_about_to_start(live_server, make_user, new_context,
                                                                      no_cluster):
    """Assigned to the only backend, which is idle, and no worker has picked it up yet
    (none runs: a session's cluster left by an earlier test would take it)."""
    from generation.models import GenerationTask
    from models_catalog.models import ComfyBackend

    backend = ComfyBackend.objects.create(name="idle", base_url="http://127.0.0.1:9", is_online=True)
    owner = make_user("waiter")
    task = GenerationTask.objects.create(
        user=owner, prompt="a quiet harbour", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7.0,
        sampler="euler", scheduler="normal", seed=1, backend=backend,
    )
    page = new_context().new_page()
    sign_in(page, live_server.url, "waiter")
    page.goto("about:blank")  # the workspace's card polls this task's state.json too
    with page.expect_response(re.compile(r"/state\.json$")) as answer:
        page.goto(f"{live_server.url}/tasks/{task.pk}/")
    state = answer.value.json()
    served = page.evaluate(JS_PANEL)  # the script has run once: its words stand now
    page.wait_for_timeout(1500)  # and after another poll
    shown = page.evaluate(JS_PANEL)
    assert "Waiting for a free backend" not in shown["panel"], shown
    assert (shown["stage"], shown["line"]) == ("Sent to an image server, about to start", "")
    assert shown["status"] == shown["badge"] == "pending"
    assert shown == served
    # The same words as the page's state.json, which the server rendered them from.
    assert (state["stage"], state["line"], state["message"]) == (shown["stage"], shown["line"], shown["message"])


def test_the_preview_is_asked_for_only_once_a_frame_exists(
    live_server, engine_catalog, qcluster, make_user, new_context, caplog
):
    base = live_server.url
    # Slow nodes before the sampler: seconds of "processing" before the first frame,
    # which is when the page used to ask (and get a 404) once a second.
    engine_catalog["engine"].faults(node_delay=0.8, step_delay=0.2)
    make_user("watcher")
    page = new_context().new_page()
    console_errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and console_errors.append(msg.text))
    previews: list[int] = []
    page.on("response", lambda r: "/preview.jpg" in r.url and previews.append(r.status))
    sign_in(page, base, "watcher")
    caplog.set_level(logging.WARNING, logger="django.request")

    task_id = submit_prompt(page, base, "a lantern in the fog", steps=6)
    page.wait_for_function(JS_PREVIEW_LOADED, timeout=30_000)
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=30_000)

    # The first request found a frame. A task that ends between the status answer and
    # the frame's request gets 204 at the very end (no failed load in the console).
    assert previews and previews[0] == 200, previews
    assert 204 not in previews[:-1] and set(previews) <= {200, 204, 304}, previews
    assert not [r.getMessage() for r in caplog.records if f"/tasks/{task_id}/preview.jpg" in r.getMessage()]
    assert not console_errors, console_errors
