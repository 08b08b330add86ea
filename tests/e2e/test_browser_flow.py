"""End to end in a real browser: sign up, generate, follow, reload, history, isolation, delete.

Headless Chromium (Playwright's sync API) against the live server, with a real qcluster
process and the demo engine on a real port. It checks what a person sees: the escaped
prompt, the progress bar moving, the live preview, the finished images, the history
thumbnail, another user's 404, and deletion.
"""
from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in, submit_prompt

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

SCREENSHOT = "/tmp/easel-e2e.png"
PASSWORD = "correct horse battery"
# Markup and entities that must reach the page as text, never as HTML.
PROMPT = 'a lighthouse, <b>bold</b> & "quotes"'
STEPS = 12
STEP_DELAY = 0.3  # seconds per demo-engine step: ~3.6 s of "processing" per task

STEP_RE = re.compile(r"Step (\d+) of (\d+)")

JS_STEP = """() => {
  const t = document.querySelector('[data-progress-text]');
  const m = t && t.textContent.match(/Step (\\d+) of (\\d+)/);
  return m && Number(m[1]) > 0 ? Number(m[1]) : null;
}"""

JS_STEP_ABOVE = """(n) => {
  const t = document.querySelector('[data-progress-text]');
  const m = t && t.textContent.match(/Step (\\d+) of (\\d+)/);
  return m && Number(m[1]) > n ? Number(m[1]) : null;
}"""

JS_PREVIEW_LOADED = """() => {
  const img = document.querySelector('img[data-preview]');
  return !!img && img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0;
}"""

JS_LOADED = "img => img.complete && img.naturalWidth > 0"


def _watch_errors(page, errors: list) -> None:
    """Collect script errors. Failed loads are left out: the live preview answers 404
    until the engine sends its first frame, and the page expects that."""

    def on_console(msg):
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(f"console: {msg.text}")

    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", on_console)




def _wait_finished_view(page) -> None:
    # task.js reloads into the server-rendered result when the task ends.
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=30_000)
    assert page.locator("[data-task-live]").count() == 0


def test_sign_up_generate_follow_history_isolation_and_delete(
    live_server, engine_catalog, qcluster, make_user, new_context
):
    base = live_server.url
    engine_catalog["engine"].faults(step_delay=STEP_DELAY)
    context = new_context()
    page = context.new_page()
    errors: list[str] = []
    _watch_errors(page, errors)

    # 1. Sign up, land on the generate page.
    page.goto(f"{base}/accounts/signup/")
    page.locator("#id_username").fill("painter")
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/")
    expect(page.get_by_role("heading", name="Generate", exact=True)).to_be_visible()
    expect(page.locator(".toast, [data-toast]").first).to_contain_text("Welcome to Easel")

    # 2. Prompt with markup, more steps, Ctrl+Enter.
    task_id = submit_prompt(page, base, PROMPT, steps=STEPS)
    task_url = f"{base}/tasks/{task_id}/"

    # The prompt is shown as text: no <b> element made it into the page.
    prompt_dd = page.locator(".params .param--wide dd.prose").first
    expect(prompt_dd).to_have_text(PROMPT)
    assert prompt_dd.locator("b").count() == 0

    # 3. The bar moves and the live preview loads while processing...
    first = page.wait_for_function(JS_STEP, timeout=30_000).json_value()
    page.wait_for_function(JS_PREVIEW_LOADED, timeout=15_000)
    later = page.wait_for_function(JS_STEP_ABOVE, arg=first, timeout=15_000).json_value()
    assert 0 < first < later <= STEPS
    bar = page.locator("progress[data-progress]").evaluate("p => [p.value, p.max]")
    assert bar[0] > 0 and bar[1] == STEPS, bar

    # ...then the finished view with its image grid.
    _wait_finished_view(page)
    thumb = page.locator(".image-grid img").first
    page.wait_for_function(f"() => {{ const i = document.querySelector('.image-grid img'); return ({JS_LOADED})(i); }}")
    assert "<b>bold</b>" in thumb.get_attribute("alt")
    full_href = page.locator(".image-tile a").first.get_attribute("href")
    full = page.request.get(f"{base}{full_href}")
    assert full.status == 200 and full.headers["content-type"].startswith("image/"), (full.status, full.headers)
    assert len(full.body()) > 0
    page.screenshot(path=SCREENSHOT, full_page=True)

    # 4. A reload mid-run resumes from the server's state (second task).
    second_id = submit_prompt(page, base, "a second lighthouse", steps=STEPS)
    seen = page.wait_for_function(JS_STEP, timeout=30_000).json_value()
    response = page.reload()
    served = STEP_RE.search(response.text())  # the server-rendered page, before any script ran
    assert served and int(served.group(1)) >= seen and int(served.group(2)) == STEPS, served
    resumed = page.wait_for_function(JS_STEP_ABOVE, arg=int(served.group(1)) - 1, timeout=15_000).json_value()
    assert resumed >= seen
    _wait_finished_view(page)

    # 5. History lists both tasks; the first one's thumbnail loads.
    page.goto(f"{base}/history/")
    card = page.locator(f'a.task-card__link[href="/tasks/{task_id}/"]')
    expect(card).to_have_count(1)
    expect(card.locator(".task-card__prompt")).to_have_text(PROMPT)
    card_img = card.locator("img")
    card_img.scroll_into_view_if_needed()
    expect(card_img).to_be_visible()
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('a.task-card__link[href=\"/tasks/{task_id}/\"] img');"
        f" return !!i && ({JS_LOADED})(i); }}"
    )
    expect(page.locator(f'a.task-card__link[href="/tasks/{second_id}/"]')).to_have_count(1)

    # 6. Another signed-in user gets 404 on the task, its image and its status.
    make_user("intruder")
    other = new_context().new_page()
    other.goto(f"{base}/accounts/login/")
    other.locator("#id_username").fill("intruder")
    other.locator("#id_password").fill(PASSWORD)
    other.get_by_role("button", name="Sign in").click()
    other.wait_for_url(f"{base}/")
    assert other.goto(task_url).status == 404
    assert other.request.get(f"{base}{full_href}").status == 404
    assert other.request.get(f"{base}/api/v1/generation/status/{task_id}").status == 404

    # 7. Delete from the task page (confirm() accepted) removes it from history.
    page.goto(task_url)
    dialogs: list[str] = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{base}/history/")
    assert dialogs and "cannot be undone" in dialogs[0]
    expect(page.locator("[data-toast]").first).to_contain_text(f"Task #{task_id} deleted.")
    expect(page.locator(f'a.task-card__link[href="/tasks/{task_id}/"]')).to_have_count(0)
    expect(page.locator(f'a.task-card__link[href="/tasks/{second_id}/"]')).to_have_count(1)
    assert page.goto(task_url).status == 404
    assert page.request.get(f"{base}{full_href}").status == 404

    assert not errors, errors


# --- the phone-sized flow: cancel, retry, theme, share, language --------------------------

# Against the device's width: a phone browser widens window.innerWidth to fit whatever
# sticks out, which would make the check pass on the very pages that scroll sideways.
JS_NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= Math.min(window.innerWidth, screen.width) + 1"




def test_phone_cancel_retry_theme_share_and_language(
    live_server, engine_catalog, qcluster, make_user, browser, new_context
):
    base = live_server.url
    engine_catalog["engine"].faults(step_delay=0.25)
    make_user("phone")
    context = browser.new_context(
        locale="en-US", viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    _watch_errors(page, errors)
    try:
        sign_in(page, base, "phone")
        assert page.evaluate(JS_NO_SIDEWAYS_SCROLL), "the generate page scrolls sideways at 375 px"

        # 1. Generate, cancel while it runs.
        task_id = submit_prompt(page, base, "a small boat", steps=STEPS)
        page.wait_for_function(JS_STEP, timeout=30_000)
        expect(page.locator("[data-stage]")).not_to_be_empty()
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("[data-status-badge]")).to_have_text("cancelled")
        expect(page.locator("[data-toast]").first).to_contain_text(f"Task #{task_id} cancelled.")
        assert page.locator("[data-task-live]").count() == 0

        # 2. Retry: the same task runs again and completes.
        page.get_by_role("button", name="Retry").click()
        page.wait_for_url(f"{base}/tasks/{task_id}/")
        _wait_finished_view(page)
        expect(page.locator("[data-status-badge]")).to_have_text("completed")
        assert page.evaluate(JS_NO_SIDEWAYS_SCROLL), "the task page scrolls sideways at 375 px"

        # The viewer opens the full picture over the page; Esc closes it.
        page.locator(".image-tile a[data-viewer]").first.click()
        viewer = page.locator("[data-viewer-overlay]")
        expect(viewer).to_be_visible()
        page.wait_for_function("() => { const i = document.querySelector('.viewer__img'); return i && i.naturalWidth > 0; }")
        before = page.locator("[data-viewer-scale]").text_content()
        page.locator(".viewer__in").click()
        assert page.locator("[data-viewer-scale]").text_content() != before
        page.keyboard.press("Escape")
        expect(viewer).to_be_hidden()

        # 3. Share: a fresh browser without a session sees the pictures...
        page.get_by_role("button", name="Create a public link").click()
        share_url = page.locator("[data-share-url]").input_value()
        assert "/s/" in share_url
        stranger = new_context().new_page()
        response = stranger.goto(share_url)
        assert response.status == 200
        expect(stranger.locator(".shared-prompt")).to_have_text("a small boat")
        shared_img = stranger.locator(".image-grid img").first
        shared_img.scroll_into_view_if_needed()
        stranger.wait_for_function(
            f"() => {{ const i = document.querySelector('.image-grid img'); return !!i && ({JS_LOADED})(i); }}"
        )
        assert "phone" not in stranger.content()
        # ...and nothing after the owner revokes the link.
        page.get_by_role("button", name="Revoke the link").click()
        expect(page.get_by_role("button", name="Create a public link")).to_be_visible()
        assert stranger.goto(share_url).status == 404

        # 4. Dark theme, chosen on the account page, survives a reload (set before paint).
        page.goto(f"{base}/accounts/me/")
        light_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        page.get_by_label("Dark").check()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        page.reload()
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert page.get_by_label("Dark").is_checked()
        dark_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert dark_bg != light_bg and dark_bg == "rgb(18, 17, 24)", (light_bg, dark_bg)

        # 5. Switch the language to Chinese: the generate page speaks it.
        page.goto(f"{base}/")
        with page.expect_navigation():
            page.locator("#language-select").select_option("zh-hans")
        page.goto(f"{base}/")
        expect(page.get_by_role("heading", level=1)).to_have_text("生成")
        expect(page.locator("label[for=id_prompt]")).to_have_text("提示词")
        assert page.evaluate(JS_NO_SIDEWAYS_SCROLL), "the Chinese generate page scrolls sideways"
        assert not errors, errors
    finally:
        context.close()
