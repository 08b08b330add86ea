"""Browser fixtures: Debian's Chromium driven by Playwright's sync API.

Playwright's own browser download is never used (no internet on the test machines):
the tests launch /usr/bin/chromium. Without it, or without the playwright package,
the browser tests skip themselves (see test_browser_flow.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    # Playwright's sync API runs an asyncio loop on the main thread, so Django's
    # async-safety check would refuse the ORM calls the test (and the database
    # teardown) make there. Only for these tests, not the whole session.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_context(browser):
    """Fresh browser contexts (separate cookie jars: separate users), closed afterwards."""
    contexts = []

    def make():
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


# --- helpers shared by the browser tests ---------------------------------------------

PASSWORD = "correct horse battery"  # make_user's password (tests/conftest.py)


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def submit_prompt(page, base: str, prompt: str, *, steps: int, stay: bool = False) -> int:
    """Fill the generate form and submit it with Ctrl+Enter; returns the new task's id.

    The workspace's script sends the form without leaving the page (its card appears in
    the results pane); then, unless `stay`, the browser opens the new task's page, where
    the callers follow it.
    """
    if page.url != f"{base}/":
        page.goto(f"{base}/")
    page.locator("#id_prompt").fill(prompt)
    page.locator("#id_steps").fill(str(steps))
    with page.expect_response(lambda r: r.url == f"{base}/" and r.request.method == "POST") as answer:
        page.locator("#id_prompt").press("Control+Enter")
    task_id = answer.value.json()["id"]
    page.locator(f'[data-ws-card][data-task-id="{task_id}"]').wait_for()
    if not stay:
        page.goto(f"{base}/tasks/{task_id}/")
    return task_id
