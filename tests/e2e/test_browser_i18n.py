"""The zh-Hans walk in Chromium: the words the pages' scripts write once they run.

tests/test_i18n_walk.py reads every page as the server sends it; here the same studio
is opened in a Chinese browser and each page is read again after its scripts ran:
the live task panel (task.js, from state.json), fresh times (easel.js), the bulk bar of
the history (history.js), a model's description on the generate page (generate.js),
the picture viewer (viewer.js), the admin's own widgets, and every question a
confirm() asks. Nothing English may be left, as in the walk.
"""
from __future__ import annotations

import pytest

from tests.e2e.conftest import PASSWORD, browser_unavailable

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from tests.i18n_text import english_runs, visible_text  # noqa: E402
from tests.test_i18n_walk import COMFYUI_NAMES, DJANGO_UNTRANSLATABLE, WRITTEN, studio  # noqa: E402, F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def _sign_in(page, base: str, username: str, path: str = "/accounts/login/") -> None:
    page.goto(f"{base}{path}")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#id_password").press("Enter")


class Reader:
    """Reads the page as it is now (after its scripts wrote), and the dialogs it raised."""

    def __init__(self, page):
        self.page = page
        self.found: dict[str, list[str]] = {}
        self.dialogs: list[str] = []
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check(self, label: str, *, shows: str = "") -> None:
        html = self.page.content()
        assert 'lang="zh-hans"' in html, f"{label} is not in Chinese"
        assert shows in html, f"{label}: {shows!r} is not on the page"
        pieces = visible_text(html) + self.dialogs
        self.dialogs = []
        runs = english_runs(pieces, ignore=WRITTEN, patterns=DJANGO_UNTRANSLATABLE, allowed_words=COMFYUI_NAMES)
        if runs:
            self.found[label] = sorted(set(runs))


def test_what_the_scripts_write_is_chinese_too(live_server, browser, studio):
    base = live_server.url
    tasks = studio["tasks"]
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        reader = Reader(page)
        _sign_in(page, base, "mei")

        # The live panel: task.js rewrites it from state.json once a second.
        page.goto(f"{base}/tasks/{tasks['running'].pk}/")
        page.wait_for_function("() => document.querySelector('[data-stage]').textContent.trim() !== ''")
        page.wait_for_timeout(1500)  # a poll or two
        reader.check("running task", shows="第 5 步，共 8 步")
        page.goto(f"{base}/tasks/{tasks['waiting'].pk}/")
        page.wait_for_timeout(1500)
        reader.check("task waiting for its backend", shows="gpu-west")

        # The viewer, opened over a finished task's picture; the delete question.
        page.goto(f"{base}/tasks/{tasks['completed'].pk}/")
        page.locator(".image-tile a[data-viewer]").first.click()
        page.wait_for_selector("[data-viewer-overlay]:not([hidden])")
        reader.check("picture viewer", shows="放大")
        page.keyboard.press("Escape")
        page.locator("form[data-confirm] button.button--danger").click()
        reader.check("delete question")

        # The history's bulk bar counts what is selected, and asks before deleting.
        page.goto(f"{base}/history/")
        page.locator("input[data-bulk-item]").nth(0).check()
        page.locator("input[data-bulk-item]").nth(1).check()
        page.locator("button[data-confirm]").click()
        reader.check("history, two selected", shows="已选择")

        # The generate page: picking another model shows its description.
        page.goto(f"{base}/")
        models = page.locator("#id_model option").evaluate_all("options => options.map(o => o.value)")
        for value in models:
            page.locator("#id_model").select_option(value)
            reader.check(f"generate, model {value}")
        page.locator("#id_template").select_option("img2img-basic")
        reader.check("generate, image to image")

        # Fresh times ("刚刚", "5 分钟前") on the account page, kept up to date by easel.js.
        page.goto(f"{base}/accounts/me/")
        page.locator("form[data-confirm] button").first.click()
        reader.check("account page, revoke question")

        # The admin's own scripts: the group picker, the date and time widgets, the actions.
        admin = context.new_page()
        admin_reader = Reader(admin)
        _sign_in(admin, base, "boss", "/admin/login/?next=/admin/")
        for path in (f"/admin/accounts/user/{studio['mei'].pk}/change/", "/admin/auth/group/1/change/",
                     f"/admin/generation/generationtask/{tasks['failed'].pk}/change/", "/admin/dashboard/",
                     "/admin/generation/generationtask/"):
            admin.goto(f"{base}{path}")
            admin.wait_for_load_state("load")
            admin_reader.check(path)
        admin.locator("#action-toggle").check()
        admin_reader.check("task list, all selected")
    finally:
        context.close()

    found = {**reader.found, **admin_reader.found}
    assert not found, "\n".join(f"{label}: {runs}" for label, runs in found.items())
