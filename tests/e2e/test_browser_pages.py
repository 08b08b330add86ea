"""What a new user met on the pages, in Chromium: long seeds, the account page on a
phone, copy buttons (and their no-script fallback), deleting from a filtered history,
fresh times that stay fresh.

From the issue "The first week of real users". Tasks are made in the database (no
engine needed): these tests are about the pages, not the generation.
"""
from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest

from tests.e2e.conftest import PASSWORD, browser_unavailable, sign_in

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

LONG_SEED = 9223372036854775807  # the largest seed there is: 19 digits

# A phone browser widens its layout viewport to fit what sticks out, so the page is
# measured against the device's width, not window.innerWidth. Lists what sticks out
# past it (nothing when the page cannot scroll sideways), outermost first.
JS_STICKING_OUT = """(width) => {
  const out = [];
  if (document.documentElement.scrollWidth > width) out.push('html scrollWidth=' + document.documentElement.scrollWidth);
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 0.5) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '')
        + ' right=' + Math.round(r.right));
      if (out.length >= 8) break;
    }
  }
  return out;
}"""


# How many lines the text of an element takes (a broken number takes two).
JS_TEXT_LINES = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
  return tops.size;
}"""


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "orange").save(buffer, "PNG")
    return buffer.getvalue()


def _task(user, *, prompt="a kite over the dunes", status="completed", image=True, **extra):
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from generation.models import GeneratedImage, GenerationTask

    values = dict(user=user, prompt=prompt, model_name="demo-sd15", width=64, height=48, steps=4, cfg=7.0,
                  sampler="euler", scheduler="normal", seed=LONG_SEED, status=status)
    if status == "completed":
        now = timezone.now()
        values.update(started_at=now - timedelta(seconds=4.5), completed_at=now)
    values.update(extra)
    task = GenerationTask.objects.create(**values)
    if image and status == "completed":
        picture = GeneratedImage(task=task, index=0, width=64, height=48, seed=LONG_SEED, size_bytes=100)
        picture.file.save("out.png", ContentFile(_png()), save=False)
        picture.thumbnail.save("thumb.webp", ContentFile(_png()), save=False)
        picture.save()
    return task


def _phone(browser, **extra):
    context = browser.new_context(locale="en-US", viewport={"width": 375, "height": 740}, is_mobile=True,
                                  has_touch=True, **extra)
    context.set_default_timeout(15_000)
    return context


def _copied_text(page) -> str:
    return page.evaluate("() => navigator.clipboard.readText()")


@pytest.mark.parametrize("width", [1366, 375])
def test_a_long_seed_stays_one_number(live_server, make_user, browser, width):
    owner = make_user("seeds")
    task = _task(owner)
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        sign_in(page, live_server.url, "seeds")
        page.goto(f"{live_server.url}/tasks/{task.pk}/")
        for where in ('[data-param="seed"] dd', ".image-tile__bar .mono"):
            number = page.locator(where).first
            expect(number).to_have_text(str(LONG_SEED))
            assert number.evaluate(JS_TEXT_LINES) == 1, f"the seed in {where} wraps at {width} px"
            box = number.bounding_box()
            assert box["x"] + box["width"] <= width, f"the seed in {where} sticks out at {width} px"
        assert page.evaluate(JS_STICKING_OUT, width) == []
        page.screenshot(path=f"/tmp/easel-seed-{width}.png", full_page=True)
    finally:
        context.close()


def test_the_account_page_on_a_phone_with_tokens_and_a_copy_button(live_server, make_user, browser):
    from accounts.services import token_create

    owner = make_user("pocket")
    for name in ("a-build-server-with-a-long-name", "my phone"):
        token_create(user=owner, name=name)
    context = _phone(browser, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        sign_in(page, live_server.url, "pocket")
        page.goto(f"{live_server.url}/accounts/me/")
        assert page.evaluate(JS_STICKING_OUT, 375) == []

        page.locator("#id_name").fill("laptop")
        page.get_by_role("button", name="Create token").click()
        token = page.locator("[data-new-token]")
        expect(token).to_be_visible()
        clear = token.input_value()
        assert len(clear) > 40
        assert page.evaluate(JS_STICKING_OUT, 375) == []
        page.screenshot(path="/tmp/easel-account-phone.png", full_page=True)

        button = page.locator('button[data-copy="new-token"]')
        expect(button).to_have_text("Copy token")
        button.click()
        expect(button).to_have_text("Copied")
        assert _copied_text(page) == clear
    finally:
        context.close()


def test_the_share_link_copies_and_is_still_selectable_without_script(live_server, make_user, browser):
    from generation.gallery.sharing import task_share

    owner = make_user("sharer")
    task = _task(owner)
    token = task_share(task=task)
    url = f"{live_server.url}/tasks/{task.pk}/"
    with_script = browser.new_context(locale="en-US", permissions=["clipboard-read", "clipboard-write"])
    without_script = browser.new_context(locale="en-US", java_script_enabled=False)
    try:
        page = with_script.new_page()
        sign_in(page, live_server.url, "sharer")
        page.goto(url)
        link = page.locator("[data-share-url]").input_value()
        assert link.endswith(f"/s/{token}/")
        button = page.locator('button[data-copy="share-url"]')
        expect(button).to_have_text("Copy link")
        button.click()
        expect(button).to_have_text("Copied")
        assert _copied_text(page) == link

        plain = without_script.new_page()
        plain.goto(f"{live_server.url}/accounts/login/")
        plain.locator("#id_username").fill("sharer")
        plain.locator("#id_password").fill(PASSWORD)
        with plain.expect_navigation():
            plain.locator("form [type=submit]").last.click()
        plain.goto(url)
        field = plain.locator("[data-share-url]")
        expect(field).to_be_visible()
        assert field.input_value() == link and field.get_attribute("readonly") is not None
        expect(plain.locator("button[data-copy]")).to_be_hidden()  # it would do nothing here
    finally:
        with_script.close()
        without_script.close()


def test_bulk_delete_asks_like_single_delete_and_comes_back_to_the_filter(live_server, make_user, new_context):
    from generation.models import GenerationTask

    owner = make_user("tidy")
    foxes = [_task(owner, prompt=f"a fox number {i}", image=False, status="failed") for i in range(3)]
    owl = _task(owner, prompt="an owl", image=False, status="failed")
    page = new_context().new_page()
    sign_in(page, live_server.url, "tidy")
    dialogs: list[str] = []

    def answer(dialog):
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    page.on("dialog", answer)

    # One task, from its page: the question every deletion asks.
    page.goto(f"{live_server.url}/tasks/{owl.pk}/")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{live_server.url}/history/")
    assert dialogs == ["confirm: Delete this task and its images? This cannot be undone."]

    # Two of the three foxes, from a filtered history.
    filtered = f"{live_server.url}/history/?q=fox&status=failed"
    page.goto(filtered)
    page.locator(f'input[data-bulk-item][value="{foxes[0].pk}"]').check()
    page.locator(f'input[data-bulk-item][value="{foxes[1].pk}"]').check()
    page.get_by_role("button", name="Delete selected…").click()
    page.wait_for_url(filtered)
    assert dialogs[1:] == ["confirm: Delete 2 tasks and their images? This cannot be undone."]
    expect(page.locator("[data-toast]").first).to_contain_text("2 tasks deleted.")
    assert page.locator("#id_q").input_value() == "fox"
    assert set(GenerationTask.objects.values_list("pk", flat=True)) == {foxes[2].pk}

    # Declining keeps everything.
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.remove_listener("dialog", answer)
    page.locator(f'input[data-bulk-item][value="{foxes[2].pk}"]').check()
    page.get_by_role("button", name="Delete selected…").click()
    page.wait_for_timeout(500)
    assert page.url == filtered and GenerationTask.objects.filter(pk=foxes[2].pk).exists()


def test_fresh_times_stay_fresh_and_turn_into_the_date(live_server, make_user, new_context):
    from django.utils import timezone

    from generation.models import GenerationTask
    from generation.templatetags.easel_time import absolute

    owner = make_user("clock")
    task = _task(owner, image=False, status="failed")
    page = new_context().new_page()
    sign_in(page, live_server.url, "clock")
    page.clock.install()
    page.goto(f"{live_server.url}/history/")
    when = page.locator(f'a[href="/tasks/{task.pk}/"] time[data-when]')
    expect(when).to_have_text("just now")
    page.clock.fast_forward("31:00")
    expect(when).to_have_text("31 minutes ago")
    page.clock.fast_forward("02:00:00")
    expect(when).to_have_text("2 hours ago")
    page.clock.fast_forward("24:00:00")
    created = GenerationTask.objects.get(pk=task.pk).created_at
    expect(when).to_have_text(absolute(created))
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{2}:\d{2}", absolute(created))
    assert timezone.now() - created < timedelta(minutes=5)  # the page's clock moved, not the server's
