"""End to end in a real browser: history search and filters, zip downloads, img2img from a
past result, a 375 px phone on every signed-in page, a prompt with a script tag shown as
text everywhere (the admin too), and a screenshot of each page kept as a test artifact.

Screenshots go to $EASEL_E2E_ARTIFACTS when set, else to a fresh temporary folder; the
folder is printed (visible with `pytest -s`) and written to README.txt inside it.
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in, submit_prompt

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(150)]

PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script>"
XSS_PROMPT = f"a red fox {XSS} in the snow"
STEPS = 8
STEP_DELAY = 0.15  # ~1.2 s of "processing" per task: long enough to see it run

JS_STEP = """() => {
  const t = document.querySelector('[data-progress-text]');
  const m = t && t.textContent.match(/Step (\\d+) of (\\d+)/);
  return m && Number(m[1]) > 0 ? Number(m[1]) : null;
}"""

# Against the device's width: a phone browser widens window.innerWidth to fit whatever
# sticks out, which would make the check pass on the very pages that scroll sideways.
JS_NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= Math.min(window.innerWidth, screen.width)"

# What sticks out past the right edge (for the failure message), outermost first.
JS_OVERFLOWING = """() => {
  const w = Math.min(window.innerWidth, screen.width), out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > w + 0.5) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '')
        + ' right=' + Math.round(r.right));
      if (out.length >= 8) break;
    }
  }
  return out;
}"""

# A <script> element carrying the prompt's payload would mean the prompt went in as HTML.
JS_INJECTED_SCRIPTS = "() => [...document.scripts].filter(s => s.textContent.includes('alert(1)')).length"

IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


def _artifacts_dir() -> Path:
    chosen = os.environ.get("EASEL_E2E_ARTIFACTS")
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="easel-e2e-"))
    (folder / "README.txt").write_text(
        f"Easel browser test screenshots ({datetime.now().isoformat(timespec='seconds')})\n"
        f"Folder: {folder}\n"
        "Written by tests/e2e/test_browser_gallery.py; set EASEL_E2E_ARTIFACTS to choose the folder.\n"
    )
    print(f"\n[easel e2e] screenshots in {folder}")
    return folder


def _watch(page, errors: list, dialogs: list) -> None:
    """Script errors and any dialog at all (alert(1) firing would land here) are collected."""

    def on_console(msg):
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(f"console: {msg.text}")

    def on_dialog(dialog):
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", on_console)
    page.on("dialog", on_dialog)




def _wait_completed(page) -> None:
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=30_000)
    expect(page.locator("[data-status-badge]")).to_have_text("completed")


def _assert_script_is_text(page, where: str) -> None:
    assert page.evaluate(JS_INJECTED_SCRIPTS) == 0, f"a <script> from the prompt made it into {where}"
    assert XSS in page.locator("body").inner_text(), f"the prompt is not shown as text on {where}"


def _history_cards(page) -> set[int]:
    hrefs = page.locator("a.task-card__link").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    return {int(re.search(r"/tasks/(\d+)/", h).group(1)) for h in hrefs}


def _filter_history(page, base: str, q: str = "", status: str = "") -> set[int]:
    page.goto(f"{base}/history/")
    page.locator("#id_q").fill(q)
    page.locator("#id_status").select_option(status)
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    return _history_cards(page)


def _zip_images(path) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        blobs = [archive.read(name) for name in archive.namelist() if not name.endswith("/")]
    for blob in blobs:
        assert blob.startswith(IMAGE_MAGIC), blob[:16]
    return blobs


def test_search_zip_img2img_phone_escaping_and_screenshots(
    live_server, engine_catalog, qcluster, make_user, browser, new_context
):
    from django.contrib.auth import get_user_model

    from generation.models import GeneratedImage, GenerationTask

    base = live_server.url
    shots = _artifacts_dir()
    engine_catalog["engine"].faults(step_delay=STEP_DELAY)
    make_user("gallery")
    errors: list[str] = []
    dialogs: list[str] = []

    # Signed-out pages.
    visitor = new_context().new_page()
    _watch(visitor, errors, dialogs)
    visitor.goto(f"{base}/accounts/login/")
    visitor.screenshot(path=shots / "01-sign-in.png", full_page=True)
    visitor.goto(f"{base}/accounts/signup/")
    expect(visitor.locator("#id_password2")).to_be_visible()
    visitor.screenshot(path=shots / "02-sign-up.png", full_page=True)

    page = new_context().new_page()
    _watch(page, errors, dialogs)
    sign_in(page, base, "gallery")
    page.screenshot(path=shots / "03-generate.png", full_page=True)

    # 1. Three tasks: the script prompt (running, then done), a whale, a cancelled whale.
    # Slow steps until the page has shown one: on a busy machine the page hears of the
    # run in bursts, and 1.2 s of steps could pass between two of them (seen in CI).
    engine_catalog["engine"].faults(step_delay=1.0)
    fox = submit_prompt(page, base, XSS_PROMPT, steps=STEPS)
    page.wait_for_function(JS_STEP, timeout=30_000)
    engine_catalog["engine"].faults(step_delay=STEP_DELAY)
    page.screenshot(path=shots / "04-task-running.png", full_page=True)
    _wait_completed(page)
    page.screenshot(path=shots / "05-task-done.png", full_page=True)
    _assert_script_is_text(page, "the task page")
    expect(page.locator(".params .param--wide dd.prose").first).to_have_text(XSS_PROMPT)

    whale = submit_prompt(page, base, "a blue whale at dawn", steps=STEPS)
    _wait_completed(page)

    cancelled = submit_prompt(page, base, "a green whale at dusk", steps=STEPS)
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-status-badge]")).to_have_text("cancelled")

    # 2. History: search by prompt text, filter by status, both together.
    assert _filter_history(page, base, q="whale") == {whale, cancelled}
    assert _filter_history(page, base, status="cancelled") == {cancelled}
    assert _filter_history(page, base, status="completed") == {fox, whale}
    assert _filter_history(page, base, q="whale", status="completed") == {whale}
    assert _filter_history(page, base, q="alert(1)") == {fox}
    assert page.locator("#id_q").input_value() == "alert(1)"
    assert _filter_history(page, base, q="no such picture") == set()
    expect(page.get_by_role("heading", name="Nothing matches")).to_be_visible()

    # The script prompt is text on the history card too.
    page.goto(f"{base}/history/")
    assert _history_cards(page) == {fox, whale, cancelled}
    card = page.locator(f'a.task-card__link[href="/tasks/{fox}/"]')
    expect(card.locator(".task-card__prompt")).to_have_text(XSS_PROMPT)
    _assert_script_is_text(page, "the history page")
    page.screenshot(path=shots / "06-history.png", full_page=True)

    # 3. Select two tasks, download them as one zip.
    download_button = page.get_by_role("button", name="Download selected (zip)")
    expect(download_button).to_be_disabled()
    page.locator(f'input[data-bulk-item][value="{fox}"]').check()
    page.locator(f'input[data-bulk-item][value="{whale}"]').check()
    expect(page.locator("[data-bulk-count]")).to_have_text("2 selected")
    with page.expect_download() as info:
        download_button.click()
    download = info.value
    assert download.suggested_filename.endswith(".zip"), download.suggested_filename
    blobs = _zip_images(download.path())
    expected = GeneratedImage.objects.filter(task_id__in=[fox, whale]).count()
    assert expected >= 2 and len(blobs) == expected, (len(blobs), expected)

    # ...and the task page's "download all", which holds that task's pictures.
    page.goto(f"{base}/tasks/{fox}/")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download all (zip)").click()
    download = info.value
    assert download.suggested_filename == f"easel-{fox}.zip", download.suggested_filename
    blobs = _zip_images(download.path())
    full_href = page.locator(".image-tile a[data-viewer]").first.get_attribute("href")
    first_image = page.request.get(f"{base}{full_href}").body()
    assert len(blobs) == GeneratedImage.objects.filter(task_id=fox).count() and first_image in blobs

    # 4. Share the script prompt's task: a stranger sees it as text.
    page.get_by_role("button", name="Create a public link").click()
    share_url = page.locator("[data-share-url]").input_value()
    assert "/s/" in share_url
    stranger = new_context().new_page()
    _watch(stranger, errors, dialogs)
    assert stranger.goto(share_url).status == 200
    expect(stranger.locator(".shared-prompt")).to_have_text(XSS_PROMPT)
    _assert_script_is_text(stranger, "the shared page")
    stranger.screenshot(path=shots / "08-shared.png", full_page=True)

    # 5. img2img from a past result: "use as source image", generate, it completes.
    page.goto(f"{base}/tasks/{whale}/")
    page.get_by_role("button", name="Use as source image").first.click()
    page.wait_for_url(re.compile(re.escape(base) + r"/\?.*source=s\d+"))
    expect(page.locator("[data-source-section]")).to_be_visible()
    picked = page.locator('input[name="source"]:checked')
    assert re.fullmatch(r"s\d+", picked.get_attribute("value")), picked.get_attribute("value")
    assert page.locator("#id_prompt").input_value() == "a blue whale at dawn"
    # The workspace sends the form without leaving the page; the new run's page follows it.
    with page.expect_response(lambda r: r.url == f"{base}/" and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Generate", exact=True).click()
    remix = answer.value.json()["id"]
    page.goto(f"{base}/tasks/{remix}/")
    _wait_completed(page)
    task = GenerationTask.objects.select_related("source_image").get(pk=remix)
    assert task.source_image is not None and task.source_image.user.username == "gallery"
    assert remix not in {fox, whale, cancelled}

    # 6. The account page.
    page.goto(f"{base}/accounts/me/")
    page.screenshot(path=shots / "07-account.png", full_page=True)

    # 7. A 375 px phone: no page scrolls sideways.
    phone_context = browser.new_context(
        locale="en-US", viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    phone_context.set_default_timeout(15_000)
    try:
        phone = phone_context.new_page()
        _watch(phone, errors, dialogs)
        sign_in(phone, base, "gallery")
        for name, path in [
            ("generate", "/"),
            ("history", "/history/"),
            ("task", f"/tasks/{fox}/"),
            ("account", "/accounts/me/"),
        ]:
            phone.goto(f"{base}{path}")
            phone.wait_for_load_state("load")
            wide = phone.evaluate(JS_OVERFLOWING)
            assert phone.evaluate(JS_NO_SIDEWAYS_SCROLL), f"the {name} page scrolls sideways at 375 px: {wide}"
            phone.screenshot(path=shots / f"10-phone-{name}.png", full_page=True)
    finally:
        phone_context.close()

    # 8. The admin, as a superuser in its own browser: the task list and the change page.
    get_user_model().objects.create_superuser(username="boss", password=PASSWORD, email="boss@example.com")
    admin = new_context().new_page()
    _watch(admin, errors, dialogs)
    admin.goto(f"{base}/admin/login/?next=/admin/generation/generationtask/")
    admin.locator("#id_username").fill("boss")
    admin.locator("#id_password").fill(PASSWORD)
    with admin.expect_navigation():
        admin.locator("#login-form [type=submit]").click()
    assert admin.url == f"{base}/admin/generation/generationtask/", admin.url
    expect(admin.locator("#result_list")).to_be_visible()
    expect(admin.locator("#result_list")).to_contain_text(XSS)
    assert admin.evaluate(JS_INJECTED_SCRIPTS) == 0, "a <script> from the prompt made it into the admin list"
    admin.screenshot(path=shots / "09-admin-task-list.png", full_page=True)
    assert admin.goto(f"{base}/admin/generation/generationtask/{fox}/change/").status == 200
    expect(admin.locator(".field-prompt .readonly")).to_have_text(XSS_PROMPT)
    _assert_script_is_text(admin, "the admin task change page")
    admin.screenshot(path=shots / "09-admin-task-change.png", full_page=True)

    assert not dialogs, f"a dialog fired: {dialogs}"
    assert not errors, errors
    for name in [
        "01-sign-in", "02-sign-up", "03-generate", "04-task-running", "05-task-done", "06-history",
        "07-account", "08-shared", "09-admin-task-list", "09-admin-task-change",
        "10-phone-generate", "10-phone-history", "10-phone-task", "10-phone-account",
    ]:
        assert (shots / f"{name}.png").stat().st_size > 0, name
