"""The task page follows its task from the event stream (GET /api/v1/events) in Chromium,
served as deployed (gunicorn with uvicorn's worker), and polls when it cannot."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in, submit_prompt

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.conftest import Web  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(150)]

JS_PROGRESS = "() => { const p = document.querySelector('progress[data-progress]'); return !!p && p.value > 0; }"


@pytest.fixture
def web(transactional_db):
    server = Web().start()
    yield server
    server.stop()


def _signed_in(context, base: str, user) -> None:
    """The session of a signed-in browser. (Signing in through the form needs the password
    hasher the server knows; the tests' fast one is only in this process.)"""
    from django.test import Client

    client = Client()
    client.force_login(user)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}])


def _requests(page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


def _on_task_page(seen: list[str], task_id: int) -> list[str]:
    """The requests from the task page on (the workspace's card polled the same task before)."""
    opened = min(i for i, url in enumerate(seen) if url.endswith(f"/tasks/{task_id}/"))
    return seen[opened:]


def test_the_task_page_is_updated_from_the_stream_without_polling(web, engine_catalog, qcluster, make_user,
                                                                   new_context):
    engine_catalog["engine"].faults(step_delay=0.25)
    context = new_context()
    _signed_in(context, web.url, make_user("streamer"))
    page = context.new_page()
    seen = _requests(page)
    task_id = submit_prompt(page, web.url, "a kite over the dunes", steps=12)
    page.wait_for_function(JS_PROGRESS, timeout=30_000)  # steps from `progress` events
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=40_000)  # `completed`: the reload
    seen = _on_task_page(seen, task_id)
    states = [u for u in seen if "/state.json" in u]
    assert any(u.endswith("/api/v1/events") for u in seen), seen
    # One look when the stream opened and one per new stage, no polling while it ran: the
    # twelve steps and their frames came from the stream (frames by their versioned URL).
    assert len(states) <= 6, states
    assert not [u for u in seen if "/api/v1/generation/status/" in u]
    assert any("/api/v1/generation/preview/" in u and "?v=" in u for u in seen), seen


def test_without_eventsource_the_page_polls(web, engine_catalog, qcluster, make_user, new_context):
    engine_catalog["engine"].faults(step_delay=0.25)
    context = new_context()
    context.add_init_script("delete window.EventSource;")
    _signed_in(context, web.url, make_user("poller"))
    page = context.new_page()
    seen = _requests(page)
    task_id = submit_prompt(page, web.url, "a kite over the dunes", steps=12)
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=40_000)
    assert not any("/api/v1/events" in u for u in seen)
    assert len([u for u in _on_task_page(seen, task_id) if "/state.json" in u]) >= 2


def test_a_stream_that_keeps_failing_falls_back_to_polling(live_server, engine_catalog, qcluster, make_user,
                                                          new_context):
    """Under a WSGI server (Django's live server) the stream answers 204: the page polls at once."""
    engine_catalog["engine"].faults(step_delay=0.25)
    make_user("fallback")
    page = new_context().new_page()
    seen = _requests(page)
    sign_in(page, live_server.url, "fallback")
    task_id = submit_prompt(page, live_server.url, "a kite over the dunes", steps=12)
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=40_000)
    seen = _on_task_page(seen, task_id)
    assert any(u.endswith("/api/v1/events") for u in seen)
    assert len([u for u in seen if "/state.json" in u]) >= 2


JS_CARD_PROGRESS = """(id) => { const p = document.querySelector(`[data-ws-card][data-task-id="${id}"] progress`);
  return !!p && p.hasAttribute('value') && p.value > 0; }"""
JS_CARD_DONE = """(id) => { const card = document.querySelector(`[data-ws-card][data-task-id="${id}"]`);
  const img = card && card.querySelector('.ws-image img');
  return !!img && img.complete && img.naturalWidth > 0 && !card.querySelector('progress'); }"""


def test_a_second_browser_sees_the_run_sent_from_the_first_progress_live(web, engine_catalog, qcluster, make_user,
                                                                         new_context):
    """The acceptance's "a second browser of the same user sees the same runs progress
    live": the workspace open in B gets the card of the run sent from A (its `created`
    event), and both cards follow it from the stream to the finished pictures."""
    engine_catalog["engine"].faults(step_delay=0.25)
    user = make_user("two-browsers")
    first, second = new_context(), new_context()
    for context in (first, second):
        _signed_in(context, web.url, user)
    watcher = second.new_page()
    seen = _requests(watcher)
    watcher.goto(f"{web.url}/")
    watcher.wait_for_function("() => !!document.querySelector('[data-ws-results]')")
    sender = first.new_page()
    task_id = submit_prompt(sender, web.url, "a kite seen from afar", steps=12, stay=True)
    for page in (watcher, sender):
        page.wait_for_function(JS_CARD_PROGRESS, arg=task_id, timeout=40_000)
    for page in (watcher, sender):
        page.wait_for_function(JS_CARD_DONE, arg=task_id, timeout=60_000)
    assert watcher.url == f"{web.url}/"  # never reloaded
    assert any(u.endswith("/api/v1/events") for u in seen), seen
    # The steps came from the stream: state.json only when the card opened and per stage.
    states = [u for u in seen if f"/tasks/{task_id}/state.json" in u]
    assert len(states) <= 8, states
