"""The acceptance walk of issue 12 in Chromium: LoRAs → inpaint → upscale, on one picture.

A new user signs in, picks "Text to image with LoRAs", chooses a LoRA and its weight in
the rows and generates; from the result, "Inpaint" opens the generate page on that
picture with the mask editor over it, a mask is painted with the mouse and the redrawn
picture keeps every pixel outside the mask; "Upscale" on that result doubles its size.
The live server, the demo engine on a real port and a real qcluster, under the site's
Content-Security-Policy, with no script error on the way. Once more in Chinese.
"""
from __future__ import annotations

import io
import re

import pytest
from django.urls import reverse

from tests.e2e.conftest import browser_unavailable, sign_in

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

SIZE = 64  # the demo checkpoints' default size in engine_catalog
INK = "demo-lora-ink.safetensors"


@pytest.fixture
def offline_lora(engine_catalog):
    """A LoRA held only by a server that is offline: chosen with Ink, nothing online has both."""
    from models_catalog.models import ComfyBackend, ModelFile

    away = ComfyBackend.objects.create(name="away", base_url="http://127.0.0.1:9", is_online=False)
    lora = ModelFile.objects.create(kind="lora", file_name="away-lora.safetensors", display_name="Away LoRA")
    lora.backends.add(away)
    return lora


def _watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    return errors


def _open(page, url: str) -> None:
    response = page.goto(url)
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "style-src 'self'" in policy, policy


def _submit(page) -> int:
    """Send the form (the workspace posts it without leaving the page), then open the
    new task's page, where the callers follow it."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/")) as answer:
        page.locator("#generate-form button[type=submit]").click()
    if answer.value.status != 201:
        expect(page.locator(".field-errors, .alert--error").first).to_be_visible()
        refused = page.locator(".field-errors, .alert--error").all_inner_texts()
        pytest.fail(f"the form was refused: {refused}")
    task_id = answer.value.json()["id"]
    page.goto(page.url.split("/?")[0].rstrip("/") + f"/tasks/{task_id}/")
    return task_id


def _wait_finished(page, task_id: int):
    from generation.models import GenerationTask

    # task.js reloads into the server-rendered result when the task ends.
    expect(page.locator(".image-grid img").first).to_be_visible(timeout=60_000)
    task = GenerationTask.objects.get(pk=task_id)
    assert task.status == "completed", (task.status, task.error_message if hasattr(task, "error_message") else "")
    return task


def _picture(field_file):
    from PIL import Image

    with field_file.open("rb") as handle:
        picture = Image.open(io.BytesIO(handle.read()))
        picture.load()
    return picture


def _result(task):
    return _picture(task.images.order_by("index").first().file)


def _screen(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("[data-mask-canvas]").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / SIZE, box["y"] + (y + 0.5) * box["height"] / SIZE


def test_loras_then_inpaint_then_upscale_on_one_picture(live_server, engine_catalog, offline_lora, qcluster,
                                                       make_user, new_context):
    base = live_server.url
    make_user(username="maya")
    page = new_context().new_page()
    errors = _watch(page)
    sign_in(page, base, "maya")
    _open(page, f"{base}/")

    # The LoRA template: picking it reloads the page with its own form, the rows.
    page.locator("#id_template").select_option("txt2img-loras")
    page.wait_for_url(re.compile(r"template=txt2img-loras"))
    page.locator("#id_prompt").fill("a fox in the snow")
    rows = page.locator("[data-lora-rows]")
    expect(rows.locator("[data-lora-row]").nth(1)).to_be_hidden()
    page.locator("#id_in_loras_0_name").select_option(INK)
    page.locator("#id_in_loras_0_strength").fill("0.6")
    warning = page.locator("[data-availability-warning]")
    expect(warning).to_be_hidden()

    # A second LoRA that only an offline server has: the page says so, live, and stops
    # saying it once that row is removed.
    rows.locator("[data-lora-add]").click()
    page.locator("#id_in_loras_1_name").select_option(offline_lora.file_name)
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("No image server that is online has all of these:")
    assert "Away LoRA" in warning.text_content() and "The task will wait until one does." in warning.text_content()
    rows.locator("[data-lora-row]").nth(1).locator("[data-lora-remove]").click()
    expect(warning).to_be_hidden()

    first = _wait_finished(page, _submit(page))
    assert first.template.slug == "txt2img-loras"
    assert first.inputs["lora_1"] == INK and first.inputs["lora_1_strength"] == 0.6
    assert first.inputs["lora_1_clip_strength"] == 0.6 and first.inputs["lora_2"] is None
    assert first.required_files == {"lora": [INK]}

    # Inpaint from the result: the mask editor opens over that very picture.
    image = first.images.get()
    page.get_by_role("link", name="Inpaint").click()
    page.wait_for_url(re.compile(r"template=inpaint"))
    editor = page.locator("[data-mask-editor]")
    assert editor.get_attribute("data-source-url") == reverse("generation:image", args=[image.pk])
    expect(page.locator("[data-mask-canvas]")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-mask-picture]'); return i && i.complete && i.naturalWidth > 0; }")
    page.locator("[data-mask-size]").evaluate(
        "el => { el.value = '8'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.locator("[data-mask-canvas]").scroll_into_view_if_needed()
    page.mouse.move(*_screen(page, 8, 16))
    page.mouse.down()
    page.mouse.move(*_screen(page, 24, 16), steps=12)
    page.mouse.up()
    page.locator("#id_prompt").fill("a red door")
    second = _wait_finished(page, _submit(page))
    assert second.template.slug == "inpaint"

    from generation.models import SourceImage

    mask = _picture(SourceImage.objects.get(pk=second.inputs["mask"]).file).convert("L")
    assert mask.size == (SIZE, SIZE)
    assert all(mask.getpixel((x, 16)) == 255 for x in (8, 16, 24)), "painted but not white"
    assert mask.getpixel((50, 50)) == 0 and mask.getpixel((16, 40)) == 0
    source = _picture(second.source_image.file).convert("RGB")
    result = _result(second).convert("RGB")
    assert result.size == source.size == (SIZE, SIZE)
    # Outside the mask (and the 6 pixels it grows by) the picture is kept, pixel for pixel.
    outside = [(x, y) for x in range(0, SIZE, 3) for y in range(34, SIZE, 3)] + \
              [(x, y) for x in range(40, SIZE, 3) for y in range(0, SIZE, 3)]
    assert [p for p in outside if result.getpixel(p) != source.getpixel(p)] == []
    inside = [(x, y) for x in range(8, 25, 2) for y in (14, 16, 18)]
    assert any(result.getpixel(p) != source.getpixel(p) for p in inside), "the masked area was not redrawn"

    # Upscale that result: twice the size with the demo engine's 2× model.
    page.get_by_role("link", name="Upscale").click()
    page.wait_for_url(re.compile(r"template=upscale"))
    expect(page.locator("#id_in_upscale_model")).to_have_value("demo-upscale-2x.pth")
    expect(warning).to_be_hidden()
    third = _wait_finished(page, _submit(page))
    assert third.template.slug == "upscale"
    assert _result(third).size == (2 * SIZE, 2 * SIZE)
    assert third.images.get().width == 2 * SIZE

    assert errors == [], errors


def test_the_tool_section_speaks_chinese(live_server, engine_catalog, offline_lora, make_user, browser):
    from tests.e2e.test_browser_i18n import _sign_in
    from tests.i18n_text import english_runs, visible_text
    from tests.test_i18n_walk import COMFYUI_NAMES, DJANGO_UNTRANSLATABLE, WRITTEN

    base = live_server.url
    make_user(username="mei")
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        errors = _watch(page)
        _sign_in(page, base, "mei")
        _open(page, f"{base}/?template=txt2img-loras")
        assert 'lang="zh-hans"' in page.content()
        page.locator("#id_in_loras_0_name").select_option(INK)
        page.locator("[data-lora-add]").click()
        page.locator("#id_in_loras_1_name").select_option(offline_lora.file_name)
        warning = page.locator("[data-availability-warning]")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("没有哪台在线的图像服务器同时具备以下全部：")
        # The tool section and the warning, as the scripts left them: no English words
        # but the names of the files (written by the catalog, not by Easel's words).
        from models_catalog.models import Checkpoint, ModelFile

        names = [name for f in ModelFile.objects.all() for name in (f.shown_name, f.file_name, f.file_name.rsplit(".", 1)[0])]
        names += [name for c in Checkpoint.objects.all() for name in (c.shown_name, c.name)]
        section = page.locator("[data-tool-inputs]").inner_html() + warning.inner_html()
        runs = english_runs(visible_text(section), ignore=[*WRITTEN, *names], patterns=DJANGO_UNTRANSLATABLE,
                            allowed_words=COMFYUI_NAMES)
        assert runs == [], runs
        assert "LoRA 列表" in section and "添加" in section
        assert errors == [], errors
    finally:
        context.close()
