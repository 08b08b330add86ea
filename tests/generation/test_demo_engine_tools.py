"""The built-in tool graphs run on the demo engine: LoRAs, hires fix, upscaling and inpainting.

Like ``test_demo_engine.py``, the engine is a real subprocess on a real port, driven over HTTP and the WebSocket
the way a ComfyUI client drives a real server. Each shipped graph (``models_catalog/builtin/*_api.json``) runs to
completion and its picture is checked for what the tool promises: the right size, and the visible effect (LoRA
lines written on the placeholder, a really enlarged upload, a repainted masked area with the rest untouched).
Validation errors are compared with the shapes a real ComfyUI 0.3.64 returned (``post_prompt_invalid.json``).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from PIL import Image, ImageChops, ImageDraw

from generation.demo_engine import imaging, render
from generation.demo_engine.options import DEFAULT_LORAS
from tests.generation.test_demo_engine import (
    REPO, EngineProcess, Frame, _sorted_errors, assert_same_keys, cap, history_entry, messages, run, types, upload,
)

BUILTIN = REPO / "models_catalog" / "builtin"
OBJECT_INFO: dict[str, Any] = cap("object_info.json")
PROMPT, SEED = "a photo of a cat", 8566257
CAPTION = "demo-sd15.safetensors euler/normal cfg 7"


@pytest.fixture(autouse=True)
def _fast_hasher() -> None:
    """Shadows the suite-wide autouse fixture of the same name, which needs pytest-django's ``settings``."""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = EngineProcess(tmp_path_factory.mktemp("demo-engine-tools"))
    yield proc
    proc.stop()


@pytest.fixture
def fresh_engine(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    started: list[EngineProcess] = []

    def start(*extra: str) -> EngineProcess:
        started.append(EngineProcess(tmp_path, *extra))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


# --- helpers ----------------------------------------------------------------------------------------------------

def graph(name: str) -> dict[str, Any]:
    return json.loads((BUILTIN / name).read_text())


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def uploaded(engine: EngineProcess, stem: str, picture: Image.Image) -> str:
    response = upload(engine, f"{stem}-{uuid.uuid4().hex[:8]}.png", png(picture))
    assert response.status_code == 200
    return response.json()["name"]


def output_pictures(engine: EngineProcess, frames: list[Frame]) -> list[Image.Image]:
    """Every picture the run's ``executed`` messages name, fetched through /view."""
    pictures = []
    for executed in messages(frames, "executed"):
        for image in executed["output"]["images"]:
            response = engine.get("/view", params=image)
            assert response.status_code == 200
            with Image.open(io.BytesIO(response.content)) as opened:
                pictures.append(opened.convert("RGB"))
    return pictures


def run_picture(engine: EngineProcess, prompt: dict[str, Any]) -> tuple[Image.Image, list[Frame]]:
    prompt_id, frames = run(engine, prompt)
    assert "execution_success" in types(frames), [m for m in messages(frames, "execution_error")]
    assert history_entry(engine, prompt_id)["status"]["status_str"] == "success"
    pictures = output_pictures(engine, frames)
    assert len(pictures) == 1
    return pictures[0], frames


def progress_series(frames: list[Frame]) -> dict[str, list[tuple[int, int]]]:
    """``progress`` messages grouped by node, in arrival order: {node: [(value, max), ...]}."""
    series: dict[str, list[tuple[int, int]]] = {}
    for message in messages(frames, "progress"):
        series.setdefault(message["node"], []).append((message["value"], message["max"]))
    return series


def rejected(engine: EngineProcess, prompt: dict[str, Any]) -> dict[str, Any]:
    response = engine.post("/prompt", json={"prompt": prompt, "client_id": "tools"})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    # The shape ComfyUI 0.3.64 answered for a bad input (post_prompt_invalid.json, "unknown checkpoint name").
    captured = next(c for c in cap("post_prompt_invalid.json")["cases"] if c["case"] == "unknown checkpoint name")
    assert_same_keys(body["error"], captured["response"]["body"]["error"])
    assert body["error"] == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                             "details": "", "extra_info": {}}
    return body


def node_error(node_id: str, class_type: str, *errors: dict[str, Any]) -> dict[str, Any]:
    return {node_id: {"errors": list(errors), "dependent_outputs": ["9"], "class_type": class_type}}


def spec(class_type: str, name: str) -> list[Any]:
    return OBJECT_INFO[class_type]["input"]["required"][name]


def differing(a: Image.Image, b: Image.Image) -> Image.Image:
    """A mode-L picture, 255 where ``a`` and ``b`` differ in any channel."""
    return ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v else 0)


def share_set(mask: Image.Image, box: tuple[int, int, int, int]) -> float:
    """The share of set pixels of a 0/255 mask inside ``box``."""
    region = mask.crop(box)
    return region.histogram()[255] / (region.width * region.height)


def pattern(width: int, height: int) -> Image.Image:
    """A source picture where every pixel is distinct from its neighbours' colours, so "unchanged" means it."""
    picture = Image.new("RGB", (width, height))
    picture.putdata([((x * 7) % 256, (y * 5) % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    return picture


# --- models and object_info -------------------------------------------------------------------------------------

DYNAMIC = {  # (class, input) → the engine's list, in the place its form keeps it
    ("CheckpointLoaderSimple", "ckpt_name"), ("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name"),
    ("UpscaleModelLoader", "model_name"), ("VAELoader", "vae_name"), ("LoadImage", "image"),
    ("LoadImageMask", "image"),
}


def test_models_and_object_info_list_the_demo_files(engine: EngineProcess) -> None:
    loras = sorted(DEFAULT_LORAS)
    assert engine.get("/models/loras").json() == loras
    assert engine.get("/api/models/loras").json() == loras
    assert engine.get("/models/upscale_models").json() == ["demo-upscale-2x.pth"]
    assert engine.get("/models/vae").json() == ["demo-vae.safetensors"]
    assert engine.get("/models/embeddings").json() == []
    assert all("demo" in name for name in loras)

    info = engine.get("/object_info").json()
    required = {name: info[name]["input"]["required"] for name in info}
    assert required["LoraLoader"]["lora_name"] == [loras, {"tooltip": "The name of the LoRA."}]
    assert required["LoraLoaderModelOnly"]["lora_name"] == [loras]
    assert required["UpscaleModelLoader"]["model_name"] == ["COMBO", {"multiselect": False,
                                                                      "options": ["demo-upscale-2x.pth"]}]
    assert required["VAELoader"]["vae_name"] == [["demo-vae.safetensors", "pixel_space"]]

    # Everything else is the real server's entry, verbatim.
    for name, entry in info.items():
        expected = json.loads(json.dumps(OBJECT_INFO[name]))
        for section in ("required", "optional"):
            for input_name, input_spec in entry["input"].get(section, {}).items():
                if (name, input_name) in DYNAMIC:
                    expected["input"][section][input_name] = input_spec
        assert entry == expected, name
    assert engine.get("/object_info/LatentUpscaleBy").json() == {"LatentUpscaleBy": OBJECT_INFO["LatentUpscaleBy"]}


def test_command_line_sets_the_lists(fresh_engine: Callable[..., EngineProcess]) -> None:
    proc = fresh_engine("--loras", "b-style.safetensors, a-style.safetensors", "--upscale-models",
                        "RealESRGAN_x4plus.pth,demo-upscale-2x.pth", "--vaes", "")
    assert proc.get("/models/loras").json() == ["a-style.safetensors", "b-style.safetensors"]
    assert proc.get("/models/upscale_models").json() == ["RealESRGAN_x4plus.pth", "demo-upscale-2x.pth"]
    assert proc.get("/models/vae").json() == []
    vae = proc.get("/object_info/VAELoader").json()["VAELoader"]["input"]["required"]["vae_name"]
    assert vae == [["pixel_space"]]

    # The factor comes from the name: x4plus → 4.
    prompt = graph("upscale_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(proc, "small", pattern(24, 16))
    prompt["2"]["inputs"]["model_name"] = "RealESRGAN_x4plus.pth"
    picture, _ = run_picture(proc, prompt)
    assert picture.size == (96, 64)


def test_upscale_model_without_a_factor_stops_start_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "generation.demo_engine", "--port", "0", "--output-dir", str(tmp_path / "o"),
         "--input-dir", str(tmp_path / "i"), "--upscale-models", "sharpener.pth"],
        cwd=REPO, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "cannot tell the scale of upscale model 'sharpener.pth'" in result.stderr


# --- text to image with LoRAs -----------------------------------------------------------------------------------

def without_loras(prompt: dict[str, Any]) -> dict[str, Any]:
    """The same graph with the LoRA chain cut out: the model and clip come straight from the checkpoint."""
    plain = {k: v for k, v in prompt.items() if v["class_type"] != "LoraLoader"}
    plain["3"]["inputs"]["model"] = ["4", 0]
    plain["6"]["inputs"]["clip"] = plain["7"]["inputs"]["clip"] = ["4", 1]
    return plain


def test_lora_graph_writes_the_loras_used(engine: EngineProcess) -> None:
    shipped = graph("txt2img_loras_api.json")
    plain, frames = run_picture(engine, without_loras(json.loads(json.dumps(shipped))))
    assert plain.size == (512, 512)

    # All four slots at strength 0: exactly the picture without LoRAs (nothing is written for them).
    unused, frames = run_picture(engine, shipped)
    assert unused.tobytes() == plain.tobytes()
    assert progress_series(frames) == {"3": [(step, 20) for step in range(1, 21)]}

    used = json.loads(json.dumps(shipped))
    used["10"]["inputs"].update(strength_model=0.8, strength_clip=0.8)   # demo-lora-ink
    used["12"]["inputs"].update(strength_model=0.5)                      # demo-lora-pencil, model only
    used["13"]["inputs"].update(strength_model=0.25, strength_clip=-0.4)  # demo-lora-watercolor
    picture, _ = run_picture(engine, used)
    assert picture.size == (512, 512)
    # The LoRA lines join the footer; the rest of the placeholder is the same picture.
    changed = differing(picture, plain).getbbox()
    assert changed is not None and changed[1] > 512 // 2
    lines = ["LoRA demo-lora-ink.safetensors model 0.8 clip 0.8", "LoRA demo-lora-pencil.safetensors model 0.5",
             "LoRA demo-lora-watercolor.safetensors model 0.25 clip -0.4"]
    expected = render.render_picture(PROMPT, SEED, 512, 512, caption=CAPTION, notes=lines)
    assert picture.tobytes() == expected.tobytes()
    # Deterministic: the same inputs give the same picture again.
    again, _ = run_picture(engine, used)
    assert again.tobytes() == picture.tobytes()


def test_lora_validation_errors_have_comfyuis_shape(engine: EngineProcess) -> None:
    loras = sorted(DEFAULT_LORAS)
    prompt = graph("txt2img_loras_api.json")
    prompt["12"]["inputs"]["lora_name"] = "missing-style.safetensors"
    body = rejected(engine, prompt)
    assert body["node_errors"] == node_error("12", "LoraLoader", {
        "type": "value_not_in_list", "message": "Value not in list",
        "details": f"lora_name: 'missing-style.safetensors' not in {loras}",
        "extra_info": {"input_name": "lora_name", "input_config": [loras, {"tooltip": "The name of the LoRA."}],
                       "received_value": "missing-style.safetensors"}})

    prompt = graph("txt2img_loras_api.json")
    prompt["10"]["inputs"].update(strength_model=1000, strength_clip="abc")
    del prompt["11"]["inputs"]["clip"]
    body = rejected(engine, prompt)
    strength_model, strength_clip = spec("LoraLoader", "strength_model"), spec("LoraLoader", "strength_clip")
    assert _sorted_errors(body)["node_errors"] == {
        **node_error("10", "LoraLoader",
                     {"type": "invalid_input_type", "message": "Failed to convert an input value to a FLOAT value",
                      "details": "strength_clip, abc, could not convert string to float: 'abc'",
                      "extra_info": {"input_name": "strength_clip", "input_config": strength_clip,
                                     "received_value": "abc",
                                     "exception_message": "could not convert string to float: 'abc'"}},
                     {"type": "value_bigger_than_max", "message": "Value 1000.0 bigger than max of 100.0",
                      "details": "strength_model",
                      "extra_info": {"input_name": "strength_model", "input_config": strength_model,
                                     "received_value": 1000.0}}),
        **node_error("11", "LoraLoader", {"type": "required_input_missing", "message": "Required input is missing",
                                          "details": "clip", "extra_info": {"input_name": "clip"}}),
    }


# --- hires fix --------------------------------------------------------------------------------------------------

def test_hires_fix_runs_two_passes(engine: EngineProcess) -> None:
    picture, frames = run_picture(engine, graph("hires_fix_api.json"))
    assert picture.size == (768, 768)

    # One progress series per KSampler, the first finished before the second starts, each step with a preview.
    assert progress_series(frames) == {"3": [(s, 20) for s in range(1, 21)], "11": [(s, 10) for s in range(1, 11)]}
    sequence = [m["node"] for m in messages(frames, "progress")]
    assert sequence == ["3"] * 20 + ["11"] * 10
    assert types(frames).count("binary:1") == 30
    final_state = messages(frames, "progress_state")[-1]["nodes"]
    assert {n: (s["value"], s["max"], s["state"]) for n, s in final_state.items() if n in ("3", "11")} == {
        "3": (20, 20, "finished"), "11": (10, 10, "finished")}
    executing = [m["node"] for m in messages(frames, "executing") if m.get("node")]
    assert executing.index("3") < executing.index("10") < executing.index("11") < executing.index("8")

    # The second pass starts from the first pass's picture (without its labels, which would show through),
    # enlarged in latent space, and says so.
    first = render.render_background(PROMPT, SEED, 512, 512)
    enlarged = imaging.common_upscale(first, 768, 768, "nearest-exact", "disabled")
    expected = render.render_picture(PROMPT, SEED, 768, 768, caption=CAPTION, source=enlarged, denoise=0.5,
                                     notes=["latent upscaled x1.5 (nearest-exact) from 512x512",
                                            "sampler pass 2, denoise 0.5"])
    assert picture.tobytes() == expected.tobytes()


def test_hires_scale_rounds_in_latent_space(engine: EngineProcess) -> None:
    prompt = graph("hires_fix_api.json")
    prompt["5"]["inputs"].update(width=200, height=120)  # latent 25x15
    prompt["10"]["inputs"]["scale_by"] = 1.3              # 32.5 → 32 (round half to even), 19.5 → 20
    prompt["3"]["inputs"]["steps"] = prompt["11"]["inputs"]["steps"] = 2
    picture, _ = run_picture(engine, prompt)
    assert picture.size == (256, 160)


def test_hires_scale_out_of_range_is_refused(engine: EngineProcess) -> None:
    for scale_by, kind, message in ((9, "value_bigger_than_max", "Value 9.0 bigger than max of 8.0"),
                                    (0, "value_smaller_than_min", "Value 0.0 smaller than min of 0.01")):
        prompt = graph("hires_fix_api.json")
        prompt["10"]["inputs"]["scale_by"] = scale_by
        body = rejected(engine, prompt)
        assert body["node_errors"] == node_error("10", "LatentUpscaleBy", {
            "type": kind, "message": message, "details": "scale_by",
            "extra_info": {"input_name": "scale_by", "input_config": spec("LatentUpscaleBy", "scale_by"),
                           "received_value": float(scale_by)}})


# --- upscale ----------------------------------------------------------------------------------------------------

def halves(width: int, height: int) -> Image.Image:
    picture = Image.new("RGB", (width, height), (220, 30, 30))
    picture.paste((30, 30, 220), (width // 2, 0, width, height))
    return picture


def test_upscale_graph_enlarges_the_upload(engine: EngineProcess) -> None:
    prompt = graph("upscale_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "halves", halves(96, 64))
    picture, frames = run_picture(engine, prompt)
    assert picture.size == (192, 128)  # the model's 2x, ImageScaleBy at 1.0
    # Still the upload (red left, blue right, away from the label)...
    assert picture.getpixel((20, 100)) == (220, 30, 30) and picture.getpixel((170, 100)) == (30, 30, 220)
    # ...with lines at the top saying it is a demo resize.
    plain = halves(96, 64).resize((192, 128), Image.Resampling.LANCZOS)
    changed = differing(picture, plain).getbbox()
    assert changed is not None and changed[1] < 8 and changed[3] < 128 // 2
    # ImageUpscaleWithModel reports its tiles (one 512 px tile here) as progress, without previews.
    assert progress_series(frames) == {"3": [(1, 1)]}
    assert not any(kind == "binary" for kind, _ in frames)

    prompt["4"]["inputs"]["scale_by"] = 1.5
    bigger, _ = run_picture(engine, prompt)
    assert bigger.size == (288, 192)
    assert bigger.getpixel((20, 150)) == (220, 30, 30)


def test_upscale_reports_one_progress_step_per_tile(engine: EngineProcess) -> None:
    prompt = graph("upscale_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "wide", halves(1000, 40))  # 3 tiles across, 1 down
    _, frames = run_picture(engine, prompt)
    assert progress_series(frames) == {"3": [(1, 3), (2, 3), (3, 3)]}


def test_unknown_upscale_model_is_refused(engine: EngineProcess) -> None:
    prompt = graph("upscale_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "halves", halves(16, 16))
    prompt["2"]["inputs"]["model_name"] = "4x-UltraSharp.pth"
    body = rejected(engine, prompt)
    assert body["node_errors"] == node_error("2", "UpscaleModelLoader", {
        "type": "value_not_in_list", "message": "Value not in list",
        "details": "model_name: '4x-UltraSharp.pth' not in ['demo-upscale-2x.pth']",
        "extra_info": {"input_name": "model_name",
                       "input_config": ["COMBO", {"multiselect": False, "options": ["demo-upscale-2x.pth"]}],
                       "received_value": "4x-UltraSharp.pth"}})


# --- inpaint ----------------------------------------------------------------------------------------------------

def rectangle_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A mask picture as a painter saves it: black, with the area to repaint in white."""
    mask = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    return mask


def inpaint_prompt(engine: EngineProcess, source: Image.Image, mask: Image.Image) -> dict[str, Any]:
    prompt = graph("inpaint_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "source", source)
    prompt["5"]["inputs"]["image"] = uploaded(engine, "mask", mask)
    return prompt


def test_inpaint_repaints_only_the_masked_area(engine: EngineProcess) -> None:
    source, box = pattern(128, 96), (40, 24, 88, 72)
    picture, frames = run_picture(engine, inpaint_prompt(engine, source, rectangle_mask((128, 96), box)))
    assert picture.size == (128, 96)
    changed = differing(picture, source)
    # grow_mask_by 6 widens the mask by ComfyUI's lopsided 6x6 window (conv2d, padding 3): pixel i is set when
    # any of i-3 … i+2 was, so the mask grows 2 px left/up and 3 px right/down.
    grown = (box[0] - 2, box[1] - 2, box[2] + 3, box[3] + 3)
    bbox = changed.getbbox()
    assert bbox is not None
    assert grown[0] <= bbox[0] and grown[1] <= bbox[1] and bbox[2] <= grown[2] and bbox[3] <= grown[3], bbox
    assert share_set(changed, box) > 0.95  # the masked area is new
    outside = Image.new("L", source.size, 255)
    outside.paste(0, grown)
    assert ImageChops.multiply(changed, outside).getbbox() is None  # outside: the source, bit for bit
    assert progress_series(frames) == {"3": [(s, 20) for s in range(1, 21)]}

    # Same inputs, same picture.
    again, _ = run_picture(engine, inpaint_prompt(engine, source, rectangle_mask((128, 96), box)))
    assert again.tobytes() == picture.tobytes()


def test_inpaint_cuts_to_whole_latent_pixels_and_reads_the_alpha_channel(engine: EngineProcess) -> None:
    # 131x99 is cut (centred) to 128x96, as ComfyUI's VAEEncodeForInpaint does: 1 px off the left, 1 off the top.
    source = pattern(131, 99)
    mask = Image.new("RGBA", (131, 99), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (60, 40, 80, 60))  # transparent = repaint, for channel "alpha"
    prompt = inpaint_prompt(engine, source, mask)
    prompt["5"]["inputs"]["channel"] = "alpha"
    prompt["2"]["inputs"]["grow_mask_by"] = 0
    picture, _ = run_picture(engine, prompt)
    assert picture.size == (128, 96)
    changed = differing(picture, source.crop((1, 1, 129, 97)))
    assert changed.getbbox() == (59, 39, 79, 59)


def test_inpaint_validation_errors_have_comfyuis_shape(engine: EngineProcess) -> None:
    prompt = inpaint_prompt(engine, pattern(32, 32), rectangle_mask((32, 32), (8, 8, 16, 16)))
    del prompt["2"]["inputs"]["mask"]
    body = rejected(engine, prompt)
    assert body["node_errors"] == node_error("2", "VAEEncodeForInpaint", {
        "type": "required_input_missing", "message": "Required input is missing", "details": "mask",
        "extra_info": {"input_name": "mask"}})

    prompt = inpaint_prompt(engine, pattern(32, 32), rectangle_mask((32, 32), (8, 8, 16, 16)))
    prompt["5"]["inputs"].update(image="no-such-mask.png", channel="purple")
    prompt["2"]["inputs"]["grow_mask_by"] = 65
    body = rejected(engine, prompt)
    assert _sorted_errors(body)["node_errors"] == {
        **node_error("5", "LoadImageMask",
                     {"type": "custom_validation_failed", "message": "Custom validation failed for node",
                      "details": "image - Invalid image file: no-such-mask.png", "extra_info": {"input_name": "image"}},
                     {"type": "value_not_in_list", "message": "Value not in list",
                      "details": "channel: 'purple' not in ['alpha', 'red', 'green', 'blue']",
                      "extra_info": {"input_name": "channel", "input_config": [["alpha", "red", "green", "blue"], {}],
                                     "received_value": "purple"}}),
        **node_error("2", "VAEEncodeForInpaint",
                     {"type": "value_bigger_than_max", "message": "Value 65 bigger than max of 64",
                      "details": "grow_mask_by",
                      "extra_info": {"input_name": "grow_mask_by", "input_config": spec("VAEEncodeForInpaint",
                                                                                        "grow_mask_by"),
                                     "received_value": 65}}),
    }


def test_set_latent_noise_mask_from_the_pictures_alpha(engine: EngineProcess) -> None:
    """ComfyUI's other way to inpaint: VAEEncode, then SetLatentNoiseMask with LoadImage's MASK (its
    transparent pixels), here grown by GrowMask (3 rounds, square corners) and used at denoise 1."""
    source = Image.new("RGBA", (64, 48), (10, 120, 200, 255))
    source.paste((10, 120, 200, 0), (20, 16, 36, 32))
    prompt = graph("img2img_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "alpha", source)
    prompt["3"]["inputs"].update(latent_image=["11", 0], denoise=1.0)
    prompt["10"] = {"class_type": "GrowMask", "inputs": {"expand": 3, "tapered_corners": False, "mask": ["1", 1]}}
    prompt["11"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["2", 0], "mask": ["10", 0]}}
    picture, _ = run_picture(engine, prompt)
    assert picture.size == (64, 48)
    changed = differing(picture, source.convert("RGB"))
    assert changed.getbbox() == (17, 13, 39, 35)
    assert share_set(changed, (17, 13, 39, 35)) > 0.95


# --- the other node classes -------------------------------------------------------------------------------------

def test_scaling_loaders_and_mask_nodes(engine: EngineProcess) -> None:
    """One prompt, several outputs: ImageScale (aspect kept, centre crop), LatentUpscale, LoraLoaderModelOnly,
    VAELoader and InvertMask, each showing ComfyUI's geometry."""
    name = uploaded(engine, "halves", halves(96, 64))
    prompt = graph("txt2img_api.json")
    prompt["12"] = {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"lora_name": "demo-lora-neon.safetensors", "strength_model": 1.0, "model": ["4", 0]}}
    prompt["3"]["inputs"]["model"] = ["12", 0]
    prompt["13"] = {"class_type": "LatentUpscale", "inputs": {"upscale_method": "bilinear", "width": 0,
                                                             "height": 100, "crop": "disabled",
                                                             "samples": ["3", 0]}}
    prompt["14"] = {"class_type": "VAELoader", "inputs": {"vae_name": "demo-vae.safetensors"}}
    prompt["8"]["inputs"].update(samples=["13", 0], vae=["14", 0])
    prompt["20"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    prompt["21"] = {"class_type": "ImageScale", "inputs": {"upscale_method": "area", "width": 0, "height": 32,
                                                          "crop": "disabled", "image": ["20", 0]}}
    prompt["22"] = {"class_type": "ImageScale", "inputs": {"upscale_method": "nearest-exact", "width": 32,
                                                          "height": 32, "crop": "center", "image": ["20", 0]}}
    prompt["23"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "scale", "images": ["21", 0]}}
    prompt["24"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "crop", "images": ["22", 0]}}
    prompt_id, frames = run(engine, prompt)
    assert "execution_success" in types(frames)
    outputs = history_entry(engine, prompt_id)["outputs"]
    assert set(outputs) == {"9", "23", "24"}

    def fetch(node: str) -> Image.Image:
        with Image.open(io.BytesIO(engine.get("/view", params=outputs[node]["images"][0]).content)) as opened:
            return opened.convert("RGB")

    # LatentUpscale, width 0: the latent (8x8) keeps its aspect at height 100 → 100 → cut to whole latent pixels.
    sampled = fetch("9")
    assert sampled.size == (96, 96)
    assert fetch("23").size == (48, 32)
    cropped = fetch("24")  # the middle 64x64 of the upload: left half red, right half blue
    assert cropped.size == (32, 32)
    assert cropped.getpixel((4, 16)) == (220, 30, 30) and cropped.getpixel((28, 16)) == (30, 30, 220)


def test_image_to_mask_alpha_fails_at_run_time_like_comfyui(engine: EngineProcess) -> None:
    """IMAGE has three channels; ComfyUI's ImageToMask indexes a fourth for "alpha" and raises."""
    red_blue = Image.new("RGB", (16, 16), (255, 0, 0))
    red_blue.paste((0, 0, 255), (8, 0, 16, 16))
    prompt = graph("img2img_api.json")
    prompt["1"]["inputs"]["image"] = uploaded(engine, "rgb", red_blue)
    prompt["10"] = {"class_type": "ImageToMask", "inputs": {"channel": "alpha", "image": ["1", 0]}}
    prompt["11"] = {"class_type": "InvertMask", "inputs": {"mask": ["10", 0]}}
    prompt["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["2", 0], "mask": ["11", 0]}}
    prompt["3"]["inputs"]["latent_image"] = ["12", 0]
    _, frames = run(engine, prompt)
    error = messages(frames, "execution_error")[0]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("10", "ImageToMask", "IndexError")
    assert error["exception_message"] == "index 3 is out of bounds for dimension 3 with size 3\n"

    prompt["10"]["inputs"]["channel"] = "red"  # 255 on the left half, 0 on the right: the inverse masks the right
    picture, _ = run_picture(engine, prompt)
    changed = differing(picture, red_blue)
    assert changed.getbbox() == (8, 0, 16, 16)
