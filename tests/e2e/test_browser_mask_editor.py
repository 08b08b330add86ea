"""The template-input widgets in Chromium (generation/web/widgets.py): the mask editor
paints over a dropped picture (mouse, eraser, pen, touch, undo, invert) and the server
receives the mask as an ordinary PNG upload; the LoRA rows hide, add, remove and send
what they show; the slider follows the number box and back; a long select filters.

The page is a test-only view (tests/widget_urls.py) under the site's real middleware,
so it runs under the site's Content-Security-Policy like every page.
"""
from __future__ import annotations

import io

import pytest

from tests.e2e.conftest import browser_unavailable

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect

from tests import widget_urls

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90), pytest.mark.urls("tests.widget_urls")]

W, H = 200, 150  # the dropped picture's size: the mask must have it


@pytest.fixture(autouse=True)
def _received():
    widget_urls.RECEIVED.clear()
    yield widget_urls.RECEIVED
    widget_urls.RECEIVED.clear()


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    path = tmp_path / "source.png"
    Image.new("RGB", (W, H), "orange").save(path, "PNG")
    return path


@pytest.fixture
def page(live_server, new_context):
    page = new_context().new_page()
    page.errors = []
    page.on("console", lambda msg: msg.type in ("error", "warning") and page.errors.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
    page.base = live_server.url
    return page


def _open(page, path="/test-widgets/"):
    response = page.goto(page.base + path)
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "style-src 'self'" in policy, policy
    return response


def _send(page) -> dict:
    page.locator("[data-send]").click()
    page.locator("[data-received]").wait_for()
    return widget_urls.RECEIVED[-1]


def _mask(received):
    from PIL import Image

    assert received.get("mask"), received
    image = Image.open(io.BytesIO(received["mask"]))
    assert image.format == "PNG"
    return image


def _screen(page, x: float, y: float) -> tuple[float, float]:
    """A point of the picture (its own pixels) on the screen."""
    box = page.locator("[data-mask-canvas]").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / W, box["y"] + (y + 0.5) * box["height"] / H


def _mouse_stroke(page, start, end):
    page.mouse.move(*_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*_screen(page, *end), steps=12)
    page.mouse.up()


# A stroke of synthetic pointer events (as a pen or a finger sends them).
JS_POINTER_STROKE = """([points, pointerType, pointerId]) => {
  const canvas = document.querySelector('[data-mask-canvas]');
  const send = (type, [x, y], buttons) => canvas.dispatchEvent(new PointerEvent(type, {
    pointerId, pointerType, isPrimary: true, clientX: x, clientY: y, button: type === 'pointermove' ? -1 : 0,
    buttons, pressure: buttons ? 0.5 : 0, bubbles: true, cancelable: true, composed: true}));
  send('pointerdown', points[0], 1);
  for (const point of points.slice(1)) send('pointermove', point, 1);
  send('pointerup', points[points.length - 1], 0);
}"""


def _pointer_stroke(page, points, pointer_type, pointer_id):
    page.evaluate(JS_POINTER_STROKE, [[_screen(page, *p) for p in points], pointer_type, pointer_id])


def _brush_size(page, size: int):
    page.locator("[data-mask-size]").evaluate(
        "(el, size) => { el.value = String(size); el.dispatchEvent(new Event('input', {bubbles: true})); }", size)


def _white(mask, points):
    return [p for p in points if mask.getpixel(p) != (255, 255, 255)]


def _black(mask, points):
    return [p for p in points if mask.getpixel(p) != (0, 0, 0)]


def test_a_mask_painted_with_mouse_pen_and_touch_reaches_the_server_as_a_png(page, picture):
    _open(page)
    editor = page.locator("[data-mask-editor]")
    expect(editor.locator("[data-mask-empty]")).to_be_visible()
    expect(editor.locator("[data-mask-tools]")).to_be_hidden()
    expect(editor.locator("input[type=file]")).to_be_hidden()  # the painter replaces the plain file box

    page.locator("#id_image").set_input_files(picture)
    expect(page.locator("[data-image-drop-preview]")).to_be_visible()
    canvas = page.locator("[data-mask-canvas]")
    expect(canvas).to_be_visible()
    assert canvas.evaluate("c => [c.width, c.height]") == [W, H]
    assert canvas.evaluate("c => getComputedStyle(c).touchAction") == "none"
    page.get_by_role("button", name="Fit").click()
    _brush_size(page, 10)

    # Mouse: a line across the middle; the eraser cuts it at x = 100.
    _mouse_stroke(page, (20, 75), (180, 75))
    page.get_by_role("button", name="Eraser").click()
    expect(page.get_by_role("button", name="Eraser")).to_have_attribute("aria-pressed", "true")
    _mouse_stroke(page, (100, 55), (100, 95))
    page.get_by_role("button", name="Brush").click()
    # A pen down the left, a finger down the right; the finger's stroke is then undone.
    _pointer_stroke(page, [(40, 10), (40, 40), (40, 60)], "pen", 21)
    _pointer_stroke(page, [(160, 10), (160, 40), (160, 60)], "touch", 22)
    page.get_by_role("button", name="Undo").click()
    # Inverted twice: as it was.
    page.get_by_role("button", name="Invert").click()
    page.get_by_role("button", name="Invert").click()

    received = _send(page)
    mask = _mask(received).convert("RGBA")
    assert mask.size == (W, H)
    assert received["mask_name"] == "mask.png" and received["image"] == "source.png"
    assert received["go"] == "yes"  # the button pressed is still the one the form names
    pixels = list(mask.get_flattened_data() if hasattr(mask, "get_flattened_data") else mask.getdata())
    assert {a for *_rgb, a in pixels} == {255}, "the mask is opaque"
    assert {(r, g, b) for r, g, b, _a in pixels} <= {(0, 0, 0), (255, 255, 255)}
    mask = mask.convert("RGB")
    stroke = [(x, 75) for x in range(25, 176, 5) if abs(x - 100) > 10] + [(50, 72), (150, 78)]
    assert _white(mask, stroke) == []
    assert _black(mask, [(100, 75), (98, 75), (102, 74)]) == [], "the erased part is black"
    assert _white(mask, [(40, 15), (40, 40), (40, 55)]) == [], "the pen's stroke is painted"
    assert _black(mask, [(160, 15), (160, 40), (160, 55)]) == [], "the undone touch stroke is gone"
    assert _black(mask, [(5, 5), (195, 145), (100, 20), (100, 130), (10, 75), (190, 75)]) == []
    painted = sum(1 for r, *_ in pixels if r)
    assert 1000 < painted < 3000, painted  # two lines 10 px wide, not the whole picture
    assert page.errors == []


def test_nothing_painted_sends_no_mask_and_a_new_picture_starts_a_new_mask(page, picture, tmp_path):
    from PIL import Image

    _open(page)
    page.locator("#id_image").set_input_files(picture)
    expect(page.locator("[data-mask-canvas]")).to_be_visible()
    _brush_size(page, 8)
    _mouse_stroke(page, (20, 20), (60, 20))
    page.get_by_role("button", name="Clear").click()
    assert _send(page)["mask"] is None

    # Painted over one picture, then another is chosen: the mask restarts at its size.
    other = tmp_path / "other.webp"
    Image.new("RGB", (120, 90), "navy").save(other, "WEBP")
    page.locator("#id_image").set_input_files(picture)
    expect(page.locator("[data-mask-canvas]")).to_be_visible()
    _mouse_stroke(page, (20, 20), (60, 20))
    page.locator("#id_image").set_input_files(other)
    page.wait_for_function("() => document.querySelector('[data-mask-canvas]').width === 120")
    expect(page.get_by_role("button", name="Undo")).to_be_disabled()
    assert page.locator("[data-mask-file] input").evaluate("i => i.files.length") == 0
    assert page.errors == []


def test_a_picture_from_the_server_and_twenty_undo_steps(page):
    """data-source-url: the page starts from one of the user's results, no file chosen."""
    _open(page, "/test-widgets/from-url/")
    canvas = page.locator("[data-mask-canvas]")
    expect(canvas).to_be_visible()
    w, h = widget_urls.PICTURE_SIZE
    assert canvas.evaluate("c => [c.width, c.height]") == [w, h]
    _brush_size(page, 3)
    box = canvas.bounding_box()
    at = lambda x, y: (box["x"] + (x + .5) * box["width"] / w, box["y"] + (y + .5) * box["height"] / h)
    dots = [(5 + 4 * i, 10 + (i % 2) * 30) for i in range(21)]
    for n, dot in enumerate(dots):
        page.evaluate(JS_POINTER_STROKE, [[at(*dot)], "mouse", 100 + n])
    for _ in range(20):
        page.get_by_role("button", name="Undo").click()
    received = _send(page)
    mask = _mask(received).convert("RGB")
    assert mask.size == (w, h)
    assert mask.getpixel(dots[0]) == (255, 255, 255), "the first dot stays: twenty steps undone, not more"
    assert [d for d in dots[1:] if mask.getpixel(d) != (0, 0, 0)] == []
    assert page.errors == []


def test_lora_rows_add_remove_and_send_what_they_show(page):
    _open(page)
    rows = page.locator("[data-lora-row]")
    add = page.get_by_role("button", name="Add a LoRA")
    expect(rows.nth(0)).to_be_visible()
    expect(rows.nth(1)).to_be_hidden()
    expect(rows.nth(2)).to_be_hidden()

    page.locator("#id_loras_0_name").select_option("ink.safetensors")
    page.locator("#id_loras_0_strength").fill("0.5")
    expect(rows.nth(0).locator("input[type=range]")).to_have_value("0.5")
    add.click()
    expect(rows.nth(1)).to_be_visible()
    expect(page.locator("#id_loras_1_name")).to_be_focused()
    page.locator("#id_loras_1_name").select_option("film.safetensors")
    add.click()
    expect(add).to_be_hidden()  # three rows: all shown
    page.locator("#id_loras_2_name").select_option("detail.safetensors")
    # Remove the middle row: the last one moves up, the rows shown stay together.
    page.get_by_role("button", name="Remove LoRA 2").click()
    expect(rows.nth(2)).to_be_hidden()
    expect(page.locator("#id_loras_1_name")).to_have_value("detail.safetensors")
    expect(add).to_be_focused()

    received = _send(page)
    assert received["loras"] == [{"name": "ink.safetensors", "strength": 0.5},
                                 {"name": "detail.safetensors", "strength": 1.0}]
    # Sent back: the filled rows show, the empty one waits behind the button.
    expect(rows.nth(1)).to_be_visible()
    expect(rows.nth(2)).to_be_hidden()
    assert page.errors == []


def test_a_strength_outside_the_narrowed_bounds_is_refused_beside_the_rows(page):
    _open(page)
    page.locator("#id_loras_0_name").select_option("ink.safetensors")
    page.locator("#id_loras_0_strength").fill("5")  # this form narrows the strength to -2..2
    page.locator("[data-send]").click()
    page.locator("[data-received]").wait_for()
    assert "strength must be between -2 and 2" in page.locator("#id_loras_errors").inner_text()
    assert widget_urls.RECEIVED[-1]["errors"]["loras"][0]["code"] == "strength_range"


def test_slider_and_number_box_follow_each_other(page):
    _open(page)
    number = page.locator("#id_cfg")
    slider = page.locator("[data-range-number]:has(#id_cfg) input[type=range]")
    expect(slider).to_have_attribute("min", "1")
    expect(slider).to_have_attribute("max", "30")
    expect(slider).to_have_attribute("step", "0.5")
    expect(slider).to_have_value("7")
    number.fill("12.5")
    expect(slider).to_have_value("12.5")
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(number).to_have_value("13")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    expect(number).to_have_value("30")
    assert _send(page)["cfg"] == 30.0


def test_a_long_select_gets_a_filter_box(page):
    _open(page)
    box = page.locator("[data-searchable-select]:has(#id_sampler)")
    filter_box = box.locator("input[type=search]")
    expect(filter_box).to_have_attribute("aria-label", "Filter the list")
    filter_box.fill("sampler 1")  # 1, 10, 11 (and the chosen one, 0, stays)
    shown = page.locator("#id_sampler").evaluate("s => [...s.options].filter(o => !o.hidden).map(o => o.value)")
    assert shown == ["s0", "s1", "s10", "s11"]
    filter_box.fill("nothing like it")
    expect(box.locator(".searchable-select__status")).to_have_text("Nothing matches.")
    filter_box.fill("sampler 11")
    filter_box.press("Enter")
    expect(page.locator("#id_sampler")).to_have_value("s11")
    # The LoRA lists are short: no filter there.
    expect(page.locator("[data-searchable-select]:has(#id_loras_0_name) input[type=search]")).to_have_count(0)
    assert page.errors == []


def test_without_script_every_row_shows_and_the_plain_inputs_work(live_server, browser):
    context = browser.new_context(locale="en-US", java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/test-widgets/")
        rows = page.locator("[data-lora-row]")
        for n in range(3):
            expect(rows.nth(n)).to_be_visible()
        expect(page.locator("input[type=range]")).to_have_count(1)  # the mask's brush size only, in hidden tools
        expect(page.locator("[data-mask-file] input[type=file]")).to_be_visible()
        page.locator("#id_loras_2_name").select_option("film.safetensors")
        page.locator("#id_loras_2_strength").fill("-1.25")
        page.locator("#id_cfg").fill("9")
        page.locator("[data-send]").click()
        page.locator("[data-received]").wait_for()
        received = widget_urls.RECEIVED[-1]
        assert received["loras"] == [{"name": "film.safetensors", "strength": -1.25}]
        assert received["cfg"] == 9.0 and received["mask"] is None
    finally:
        context.close()


# A picture from the server as a File, handed to the drop zone as a drop or a paste.
JS_HAND_OVER = """async ([how, url, type, name]) => {
  const blob = await (await fetch(url)).blob();
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type}));
  const zone = document.querySelector('[data-image-drop]');
  if (how === 'drop') {
    zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
  } else {
    document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}));
  }
}"""


def test_a_picture_dropped_or_pasted_lands_in_the_file_input_and_the_mask_follows_it(page):
    _open(page)
    expect(page.locator("[data-image-drop-hint]")).to_be_visible()
    image = page.locator("#id_image")
    # A GIF is refused, in words from the page.
    page.evaluate(JS_HAND_OVER, ["drop", "/test-widgets/picture.png", "image/gif", "moving.gif"])
    expect(page.locator("[data-image-drop-error]")).to_have_text("Only PNG, JPEG or WebP pictures can be used.")
    assert image.evaluate("i => i.files.length") == 0

    page.evaluate(JS_HAND_OVER, ["drop", "/test-widgets/picture.png", "image/png", "dropped.png"])
    expect(page.locator("[data-image-drop-error]")).to_be_hidden()
    expect(page.locator("[data-image-drop-preview]")).to_be_visible()
    assert image.evaluate("i => i.files[0].name") == "dropped.png"
    w, _h = widget_urls.PICTURE_SIZE
    page.wait_for_function(f"() => document.querySelector('[data-mask-canvas]').width === {w}")

    page.evaluate(JS_HAND_OVER, ["paste", "/test-widgets/picture.png", "image/png", "pasted.png"])
    page.wait_for_function("() => document.querySelector('#id_image').files[0].name === 'pasted.png'")
    assert _send(page)["image"] == "pasted.png"
    assert page.errors == []


def test_the_scripts_words_follow_the_readers_language(live_server, browser):
    context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-Hans"})
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/test-widgets/")
        filter_box = page.locator("[data-searchable-select]:has(#id_sampler) input[type=search]")
        expect(filter_box).to_have_attribute("aria-label", "筛选列表")
        expect(filter_box).to_have_attribute("placeholder", "输入以筛选…")
        filter_box.fill("zzz")
        expect(page.locator(".searchable-select__status")).to_have_text("没有匹配的结果。")
        expect(page.get_by_role("button", name="添加 LoRA")).to_be_visible()
    finally:
        context.close()
