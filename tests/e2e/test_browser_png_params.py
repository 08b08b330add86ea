"""Settings from a picture, in Chromium: a PNG picked with "Load settings from a
picture", or dropped on the generate page, fills the form with how it was made (an
Easel PNG: its prompt in Chinese, a seed past 2**53, its model; a ComfyUI PNG: its
graph's settings); a PNG that says nothing gets a readable message. Session sign-in,
the site's CSP, no script error."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import browser_unavailable, sign_in

_reason = browser_unavailable()
if _reason:
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
PROMPT = "月光下的一只橘猫，水墨画风格"
SEED = 9223372036854775807  # past 2**53: a JavaScript number would round it


def _png(text: dict | None = None) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "teal").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _easel_png() -> bytes:
    from generation.gallery.png_params import png_with_parameters

    return png_with_parameters(_png(), {
        "v": 1, "prompt": PROMPT, "negative_prompt": "模糊", "model_name": "gone", "checkpoint": "demo-xl.safetensors",
        "template": "txt2img", "width": 768, "height": 512, "seed": SEED, "steps": 33, "cfg": 5.5,
        "sampler": "dpmpp_2m", "scheduler": "karras", "denoise": None, "batch_size": 1, "batch_index": 0, "inputs": {},
    })


def _drop(page, data: bytes, target: str) -> None:
    """Drop a PNG file on `target` as a file dragged from the desktop would be."""
    page.evaluate(
        """([b64, target]) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], "picture.png", {type: "image/png"}));
          const el = document.querySelector(target);
          for (const type of ["dragenter", "dragover", "drop"]) {
            el.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
          }
        }""",
        [base64.b64encode(data).decode(), target],
    )


def test_a_picked_or_dropped_png_fills_the_generate_form(live_server, make_user, catalog, new_context):
    from models_catalog.models import Checkpoint

    other = Checkpoint.objects.create(name="demo-xl", ckpt_name="demo-xl.safetensors", display_name="Demo XL")
    other.backends.add(catalog["backend"])
    make_user("painter")
    page = new_context().new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, live_server.url, "painter")
    expect(page.locator("#id_model")).to_have_value("demo-sd15")

    # Picked: an Easel PNG.
    page.locator("[data-params-file]").set_input_files(
        files=[{"name": "easel.png", "mimeType": "image/png", "buffer": _easel_png()}])
    expect(page.locator("[data-params-status]")).to_have_text("The settings of this picture are filled in.")
    expect(page.locator("#id_prompt")).to_have_value(PROMPT)
    expect(page.locator("#id_negative_prompt")).to_have_value("模糊")
    expect(page.locator("#id_model")).to_have_value("demo-xl")  # found by its file name
    expect(page.locator("#id_size")).to_have_value("768x512")
    expect(page.locator("#id_seed")).to_have_value(str(SEED))
    expect(page.locator("#id_seed_random")).not_to_be_checked()
    for field, value in (("steps", "33"), ("cfg", "5.5"), ("sampler", "dpmpp_2m"), ("scheduler", "karras")):
        expect(page.locator(f"#id_{field}")).to_have_value(value)

    # Dropped on the page (on the prompt box): a ComfyUI PNG, with a size no preset has.
    graph = json.loads((FIXTURES / "workflow_txt2img_api.json").read_text())
    _drop(page, _png({"prompt": json.dumps(graph)}), "#id_prompt")
    expect(page.locator("#id_prompt")).to_have_value("a photo of a cat")
    expect(page.locator("#id_size")).to_have_value("custom")
    expect(page.locator("#id_width")).to_be_visible()
    expect(page.locator("#id_width")).to_have_value("64")
    expect(page.locator("#id_seed")).to_have_value("8566257")
    expect(page.locator("#id_model")).to_have_value("demo-xl")  # its checkpoint is not in the catalog: unchanged

    # A PNG that says nothing: the form stays, a message says why.
    _drop(page, _png(), "#id_negative_prompt")
    expect(page.locator("[data-params-status]")).to_have_text(
        "This picture does not say how it was made: it carries no settings Easel can read.")
    expect(page.locator("#id_prompt")).to_have_value("a photo of a cat")
    assert errors == [] or all("400" in e for e in errors), errors  # the refused upload's own 400 only

    # The form still generates with what was filled in.
    page.locator("#generate-form button[type=submit]").click()
    page.locator("[data-ws-card]").wait_for()  # sent without leaving the page: its card shows
    from generation.models import GenerationTask

    task = GenerationTask.objects.get()
    assert (task.prompt, task.seed, task.width, task.model_name) == ("a photo of a cat", 8566257, 64, "demo-xl")
