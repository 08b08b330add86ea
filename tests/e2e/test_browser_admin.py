"""The admin in Chromium at 1366 × 768 (a common laptop): branding, the icon, the task
list's last column in view, the dashboard's hourly chart with its last label whole.

From the issue "The first week of real users" (what staff met in the admin).
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.e2e.conftest import PASSWORD, browser_unavailable

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

SCREENSHOT = "/tmp/easel-admin-tasks-1366.png"

# Each text label of an SVG chart against the chart's own box (its viewBox), in the
# chart's units: a label cut off by the box has a part outside [0, width].
JS_CHART_LABELS = """(svg) => {
  const box = svg.viewBox.baseVal;
  return [...svg.querySelectorAll('text.axis')].map(t => {
    const b = t.getBBox();
    return {text: t.textContent, left: b.x, right: b.x + b.width, width: box.width};
  });
}"""


def _admin_page(browser, base: str, *, width: int = 1366, height: int = 768):
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{base}/admin/login/")
    page.locator("#id_username").fill("boss")
    page.locator("#id_password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#login-form [type=submit]").click()
    return context, page


@pytest.fixture
def busy_studio(make_user):
    """Tasks as a week of use leaves them: long names, every status, a backend."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from generation.models import GenerationTask, TaskStatus
    from models_catalog.models import ComfyBackend

    get_user_model().objects.create_superuser(username="boss", password=PASSWORD, email="boss@example.com")
    backend = ComfyBackend.objects.create(name="gpu-east-1-a100", base_url="http://127.0.0.1:9", is_online=True)
    owner = make_user("a.rather.long.username")
    now = timezone.now()
    for i, status in enumerate(TaskStatus.values * 3):
        ended = status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
        task = GenerationTask.objects.create(
            user=owner, prompt=f"a very detailed prompt number {i}, with many words, lights, colours and style",
            model_name="stable-diffusion-xl-base-1.0", width=1024, height=1024, steps=30, cfg=7.0,
            sampler="dpmpp_2m", scheduler="karras", seed=123456789012345, status=status, backend=backend,
        )
        if ended:
            GenerationTask.objects.filter(pk=task.pk).update(
                started_at=now - timedelta(hours=i, seconds=30), completed_at=now - timedelta(hours=i))
    return owner


def test_the_task_list_shows_its_last_column_at_1366(live_server, busy_studio, browser):
    context, page = _admin_page(browser, live_server.url)
    try:
        page.goto(f"{live_server.url}/admin/generation/generationtask/")
        results = page.locator("#changelist .results")
        expect(results).to_be_visible()
        page.screenshot(path=SCREENSHOT)
        headers = page.locator("#result_list thead th").evaluate_all(
            "ths => ths.map(th => [th.textContent.trim(), th.getBoundingClientRect().right])")
        last_name, last_right = headers[-1]
        assert last_name.lower().startswith("created"), headers
        visible_right = results.evaluate("el => el.getBoundingClientRect().right")
        assert last_right <= visible_right + 0.5, (headers, visible_right)
        assert results.evaluate("el => el.scrollWidth <= el.clientWidth"), "the task list scrolls sideways"
    finally:
        context.close()


def test_branding_and_the_icon_on_every_admin_page(live_server, busy_studio, browser):
    context, page = _admin_page(browser, live_server.url)
    try:
        for path in ("/admin/", "/admin/generation/generationtask/", "/admin/generation/webhookdelivery/",
                     "/admin/dashboard/", "/admin/password_change/"):
            page.goto(f"{live_server.url}{path}")
            expect(page.locator("#site-name")).to_have_text("Easel administration")
            assert page.title().endswith("| Easel administration"), (path, page.title())
            icon = page.locator('link[rel="icon"]')
            expect(icon).to_have_count(1)
            answer = page.request.get(live_server.url + icon.get_attribute("href"))
            assert answer.status == 200 and answer.headers["content-type"].startswith("image/svg"), path
        page.goto(f"{live_server.url}/admin/")
        expect(page.get_by_role("link", name="Webhook deliveries")).to_be_visible()
    finally:
        context.close()
    # The sign-in page, before anyone is signed in, is the admin's too.
    context = browser.new_context(locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/admin/login/")
        expect(page.locator("#site-name")).to_have_text("Easel 管理")
        expect(page.locator('link[rel="icon"]')).to_have_count(1)
    finally:
        context.close()


@pytest.mark.parametrize("days", [1, 7])
def test_the_hourly_charts_last_label_is_whole(live_server, busy_studio, browser, days):
    context, page = _admin_page(browser, live_server.url)
    try:
        page.goto(f"{live_server.url}/admin/dashboard/?days={days}")
        charts = page.locator("svg.easel-chart")
        expect(charts).to_have_count(2)
        for chart in (charts.nth(0), charts.nth(1)):
            labels = chart.evaluate(JS_CHART_LABELS)
            axis = [label for label in labels if label["left"] > 0 or label["right"] > 20][1:]  # not the peak
            assert axis, labels
            for label in labels:
                assert label["left"] >= -0.5 and label["right"] <= label["width"] + 0.5, label
            lefts = sorted(label["left"] for label in axis)
            rights = sorted(label["right"] for label in axis)
            assert all(r <= l for r, l in zip(rights, lefts[1:])), f"labels overlap: {labels}"
        page.screenshot(path=f"/tmp/easel-admin-dashboard-{days}d.png", full_page=True)
    finally:
        context.close()
