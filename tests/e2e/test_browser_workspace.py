"""The generate page as a workspace, in Chromium: two runs sent without leaving the page,
both cards follow their tasks (progress, then the finished pictures), and "use these
settings" fills the form from one of them.

From the issue "The studio workspace: generate, watch and iterate on one page".
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

STEPS = 6
SHOTS = Path(tempfile.gettempdir()) / "easel-shots"
SHOTS.mkdir(exist_ok=True)

# Some card's bar has counted a step (the card follows its task's state.json).
JS_CARD_PROGRESS = """() => Array.from(document.querySelectorAll('[data-ws-card] progress[data-progress]'))
  .some(p => p.hasAttribute('value') && p.value > 0)"""

JS_CARD_DONE = """(id) => {
  const card = document.querySelector(`[data-ws-card][data-task-id="${id}"]`);
  const img = card && card.querySelector('.ws-image img');
  return !!img && img.complete && img.naturalWidth > 0 && !card.querySelector('progress');
}"""


def _send(page, base: str, prompt: str, *, keys: bool) -> int:
    page.locator("#id_prompt").fill(prompt)
    page.locator("#id_steps").fill(str(STEPS))
    with page.expect_response(lambda r: r.url == f"{base}/" and r.request.method == "POST") as answer:
        if keys:
            page.locator("#id_prompt").press("Control+Enter")
        else:
            page.get_by_role("button", name="Generate", exact=True).click()
    assert answer.value.status == 201
    return answer.value.json()["id"]


def test_two_runs_from_one_page_follow_themselves_and_refill_the_form(
    live_server, engine_catalog, qcluster, make_user, new_context
):
    from generation.models import GenerationTask

    base = live_server.url
    engine_catalog["engine"].faults(step_delay=0.25)
    make_user("studio")
    page = new_context().new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, base, "studio")
    expect(page.locator("[data-ws-empty]")).to_be_visible()

    # A refused form: its errors show in place, beside the field, and nothing is queued.
    page.locator("#id_prompt").fill("")
    with page.expect_response(lambda r: r.url == f"{base}/" and r.request.method == "POST") as refused:
        page.get_by_role("button", name="Generate", exact=True).click()
    assert refused.value.status == 400
    prompt_errors = page.locator(".field--error:has(#id_prompt) .field-errors")
    expect(prompt_errors).to_be_visible()
    assert page.url == f"{base}/" and GenerationTask.objects.count() == 0
    errors[:] = [e for e in errors if "400" not in e]  # the browser logs the refused answer

    first = _send(page, base, "a lighthouse <b>first</b>", keys=False)
    expect(prompt_errors).to_have_count(0)  # the next answer clears them
    second = _send(page, base, "a harbour second", keys=True)
    assert page.url == f"{base}/"  # never left the page

    cards = page.locator("[data-ws-card]")
    expect(cards).to_have_count(2)
    # Newest first; the prompt shown as text.
    assert cards.nth(0).get_attribute("data-task-id") == str(second)
    assert cards.nth(1).get_attribute("data-task-id") == str(first)
    expect(cards.nth(1).locator(".ws-card__prompt")).to_have_text("a lighthouse <b>first</b>")
    expect(page.locator("[data-ws-empty]")).to_be_hidden()

    # Progress shows on a card while it runs, then each swaps itself for its finished form.
    page.wait_for_function(JS_CARD_PROGRESS, timeout=60_000)
    page.wait_for_function(JS_CARD_DONE, arg=first, timeout=90_000)
    page.wait_for_function(JS_CARD_DONE, arg=second, timeout=90_000)
    assert page.url == f"{base}/"
    page.screenshot(path=SHOTS / "workspace-wide.png", full_page=False)
    done = page.locator(f'[data-ws-card][data-task-id="{first}"]')
    expect(done.locator(".badge")).to_have_text("completed")
    expect(done.locator(".ws-card__when time")).to_have_text("just now")
    expect(done.locator("[data-generation-time]")).to_be_visible()

    # Open full size: the viewer shows the full picture over the page.
    done.get_by_role("link", name="Open full size").click()
    viewer = page.locator("[data-viewer-overlay]")
    expect(viewer).to_be_visible()
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    # "Use these settings": the form is filled from that run.
    task = GenerationTask.objects.get(pk=first)
    done.get_by_role("link", name="Use these settings").click()
    page.wait_for_url(f"{base}/?**")
    expect(page.locator("#id_prompt")).to_have_value("a lighthouse <b>first</b>")
    expect(page.locator("#id_seed")).to_have_value(str(task.seed))
    expect(page.locator("#id_steps")).to_have_value(str(STEPS))
    # Both runs are still in the pane, rendered by the server this time.
    expect(page.locator("[data-ws-card]")).to_have_count(2)

    # A card's actions in place: vary the seed (a new run at the top), cancel it, delete it.
    done = page.locator(f'[data-ws-card][data-task-id="{first}"]')
    with page.expect_response(lambda r: "/vary" in r.url) as varied:
        done.get_by_role("button", name="Vary seed").click()
    assert varied.value.status == 201
    third = varied.value.json()["id"]
    expect(page.locator("[data-ws-card]")).to_have_count(3)
    assert page.locator("[data-ws-card]").nth(0).get_attribute("data-task-id") == str(third)
    new_card = page.locator(f'[data-ws-card][data-task-id="{third}"]')
    new_card.get_by_role("button", name="Cancel").click()
    expect(new_card.locator(".badge")).to_have_text("cancelled")
    expect(page.locator("[data-ws-status]")).to_contain_text(f"Task #{third} cancelled.")
    page.once("dialog", lambda dialog: dialog.accept())
    new_card.get_by_role("button", name="Delete").click()
    expect(page.locator(f'[data-ws-card][data-task-id="{third}"]')).to_have_count(0)
    expect(page.locator("[data-ws-card]")).to_have_count(2)
    assert not GenerationTask.objects.filter(pk=third).exists()
    assert page.url.startswith(f"{base}/?")  # never left the workspace

    # On a phone the results stack under the form, and nothing scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 740})
    form_box = page.locator("[data-generate-form]").bounding_box()
    pane_box = page.locator("[data-ws-results]").bounding_box()
    assert pane_box["y"] >= form_box["y"] + form_box["height"] - 1, (form_box, pane_box)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=SHOTS / "workspace-phone.png", full_page=False)
    assert errors == [], errors
