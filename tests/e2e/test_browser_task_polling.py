"""The task page's polling in Chromium: it sends the last ETag, slows down while nothing
changes, stops while the tab is hidden and catches up at once when shown, fetches a
frame only when its version changed, and stops when the task ends.

From the issue "The studio workspace: updates pushed, not polled": every open task page
asked about three times a second (status, words and a frame each time), hidden tabs too.
"""
from __future__ import annotations

import io
import time

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

JS_PREVIEW_LOADED = """() => {
  const img = document.querySelector('img[data-preview]');
  return !!img && img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0;
}"""


def _visibility(hidden: bool) -> str:
    """Make the page believe it was hidden (or shown), as switching tabs does."""
    state = "hidden" if hidden else "visible"
    return f"""() => {{
      Object.defineProperty(document, 'visibilityState', {{configurable: true, get: () => '{state}'}});
      Object.defineProperty(document, 'hidden', {{configurable: true, get: () => {str(hidden).lower()}}});
      document.dispatchEvent(new Event('visibilitychange'));
    }}"""


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "teal").save(buffer, "JPEG")
    return buffer.getvalue()


def test_the_task_page_polls_cheaply(live_server, make_user, new_context):
    from django.utils import timezone

    from generation.models import GenerationTask, TaskPreview, TaskStatus

    owner = make_user("poller")
    task = GenerationTask.objects.create(
        user=owner, prompt="a quiet harbour", model_name="demo-sd15", width=64, height=64, steps=8, cfg=7.0,
        sampler="euler", scheduler="normal", seed=1, status=TaskStatus.PROCESSING, progress_value=1,
        progress_max=8, progress_node="KSampler", started_at=timezone.now(),
    )
    rows = GenerationTask.objects.filter(pk=task.pk)
    page = new_context().new_page()
    sign_in(page, live_server.url, "poller")
    # Signing in lands on the workspace, whose card for this running task polls the same
    # state.json: leave it before counting, so none of its requests is counted here.
    page.goto("about:blank")

    asked: list[tuple[float, str | None]] = []  # state.json requests: when, with which If-None-Match
    answered: list[int] = []
    frames: list[str] = []
    other_api: list[str] = []

    def on_request(request):
        if "/state.json" in request.url:
            asked.append((time.monotonic(), request.headers.get("if-none-match")))
        elif "/preview.jpg" in request.url:
            frames.append(request.url)
        elif "/api/v1/generation/" in request.url:
            other_api.append(request.url)

    page.on("request", on_request)
    page.on("response", lambda r: "/state.json" in r.url and answered.append(r.status))
    page.goto(f"{live_server.url}/tasks/{task.pk}/")

    # 1. Nothing changes: each request names the ETag it holds, is answered 304, and the
    # pause grows (0.5 s, 1 s, 2 s, ...) instead of asking twice a second.
    page.wait_for_timeout(4500)
    assert 3 <= len(asked) <= 5, asked
    assert asked[0][1] is None and all(tag and tag.startswith('W/"') for _, tag in asked[1:]), asked
    assert answered[0] == 200 and set(answered[1:]) == {304}, answered
    gaps = [b - a for (a, _), (b, _) in zip(asked, asked[1:])]
    assert gaps[-1] > 1.5 * gaps[0], gaps
    assert frames == [] and other_api == []  # no frame yet, and one URL polled, not three

    # 2. A change is shown at the next request, and the pace is quick again.
    rows.update(progress_value=5)
    expect(page.locator("[data-progress-text]")).to_have_text("Step 5 of 8", timeout=10_000)

    # 3. A frame: fetched once, by its versioned URL, however often the page asks after.
    TaskPreview.objects.update_or_create(task_id=task.pk, defaults={"image": _jpeg(), "content_type": "image/jpeg"})
    page.wait_for_function(JS_PREVIEW_LOADED, timeout=10_000)
    page.wait_for_timeout(2000)
    assert len(frames) == 1 and "?v=" in frames[0], frames

    # 4. Hidden: no request at all, however long (longer than the longest pause).
    page.evaluate(_visibility(True))
    page.wait_for_timeout(700)  # one already on its way may land
    while_hidden = len(asked)
    rows.update(progress_value=7)
    page.wait_for_timeout(6000)
    assert len(asked) == while_hidden, asked[while_hidden:]
    expect(page.locator("[data-progress-text]")).to_have_text("Step 5 of 8")

    # 5. Shown again: asks at once and shows what changed meanwhile.
    shown_at = time.monotonic()
    page.evaluate(_visibility(False))
    expect(page.locator("[data-progress-text]")).to_have_text("Step 7 of 8", timeout=2000)
    assert asked[while_hidden][0] - shown_at < 0.5, asked[while_hidden:]

    # 6. The task ends: the page shows the server's result and polls no more.
    rows.update(status=TaskStatus.CANCELLED, completed_at=timezone.now())
    expect(page.get_by_text("This task was cancelled.")).to_be_visible(timeout=10_000)
    after_end = len(asked)
    page.wait_for_timeout(2500)
    assert len(asked) == after_end
