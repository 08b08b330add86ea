"""A picture remembers how it was made: Easel writes its parameters into the PNGs it
stores (an `easel` JSON chunk and an A1111 `parameters` text), reads them back from a
PNG (its own, ComfyUI's `prompt` graph, A1111's text) for the generate form, and a
public share link still hands out none of it."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, PngImagePlugin

from generation.gallery import png_params
from generation.gallery.png_params import PngParamsError, png_params_read, png_with_parameters

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
URL = "/api/v1/generation/parameters-from-png"
CHINESE = "月光下的一只橘猫，水墨画风格"


def _png(pnginfo=None, size=(16, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "teal").save(out, "PNG", pnginfo=pnginfo)
    return out.getvalue()


def _comfy_png(graph_file: str = "workflow_txt2img_api.json") -> bytes:
    """A PNG as ComfyUI 0.3.64's SaveImage writes it: the submitted API graph as a tEXt
    `prompt` (json.dumps, so ASCII), the UI workflow as `workflow`."""
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(json.loads((FIXTURES / graph_file).read_text())))
    info.add_text("workflow", json.dumps({"nodes": [], "links": []}))
    return _png(info)


def _params(**changes) -> dict:
    values = {"v": 1, "prompt": CHINESE, "negative_prompt": "模糊，低质量", "model_name": "demo-sd15",
              "checkpoint": "demo-sd15.safetensors", "template": "txt2img", "width": 16, "height": 12,
              "seed": 9223372036854775807, "steps": 24, "cfg": 6.5, "sampler": "dpmpp_2m", "scheduler": "karras",
              "denoise": None, "batch_size": 2, "batch_index": 1, "inputs": {"lora": "ink.safetensors"}}
    values.update(changes)
    return values


def _text_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, keyword) of each text chunk, walking the file as a PNG reader does."""
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found.append((kind, data[pos + 8:pos + 8 + length].split(b"\0", 1)[0]))
        pos += 12 + length
    return found


# --- writing and reading ------------------------------------------------------------


def test_easel_chunks_round_trip_a_chinese_prompt_and_leave_the_pixels_alone():
    original = _comfy_png()
    stored = png_with_parameters(original, _params())
    # Spliced before IEND: every byte of the original is still there, in order.
    assert stored[:len(original) - 12] == original[:-12] and stored.endswith(original[-12:])
    with Image.open(io.BytesIO(stored)) as picture:
        picture.load()  # every CRC checks
        assert picture.text["parameters"].startswith(CHINESE + "\nNegative prompt: 模糊，低质量\nSteps: 24, ")
        assert "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5" in picture.text["parameters"]
        assert "Seed: 9223372036854775807, Size: 16x12, Model: demo-sd15" in picture.text["parameters"]
        assert json.loads(picture.text["easel"])["prompt"] == CHINESE
        assert "prompt" in picture.text and "workflow" in picture.text  # ComfyUI's own stay
    # Chinese needs UTF-8: iTXt; ComfyUI's ASCII chunks stay tEXt.
    assert (b"iTXt", b"easel") in _text_chunks(stored) and (b"iTXt", b"parameters") in _text_chunks(stored)
    read = png_params_read(stored)
    assert read["source"] == "easel"  # first, before ComfyUI's graph in the same file
    assert {k: read[k] for k in _params() if k != "v"} == {k: v for k, v in _params().items() if k != "v"}


def test_a_latin_only_prompt_is_written_as_plain_text():
    stored = png_with_parameters(_png(), _params(prompt="a red fox", negative_prompt=""))
    assert [kind for kind, _ in _text_chunks(stored)] == [b"tEXt", b"tEXt"]
    assert png_params_read(stored)["prompt"] == "a red fox"


def test_bytes_that_are_not_a_png_are_stored_unchanged():
    assert png_with_parameters(b"GIF89a...", _params()) == b"GIF89a..."


def test_comfyui_graph_gives_the_samplers_settings():
    read = png_params_read(_comfy_png())
    assert read == {
        "source": "comfyui", "prompt": "a photo of a cat", "negative_prompt": "blurry, low quality",
        "model_name": None, "checkpoint": "random-sd15.safetensors", "template": None,
        "width": 64, "height": 64, "batch_size": 1, "seed": 8566257, "steps": 2, "cfg": 7.0,
        "sampler": "euler", "scheduler": "normal", "denoise": 1.0, "batch_index": None, "inputs": None,
    }


def test_comfyui_img2img_graph_has_a_denoise_and_no_size():
    read = png_params_read(_comfy_png("workflow_img2img_api.json"))
    assert (read["prompt"], read["denoise"], read["width"], read["checkpoint"]) == (
        "a photo of a cat", 0.6, None, "random-sd15.safetensors")


def test_comfyui_graph_through_a_lora_loader_and_an_advanced_sampler():
    graph = json.loads((FIXTURES / "workflow_txt2img_api.json").read_text())
    sampler = graph.pop("3")["inputs"]
    graph["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "x"}}
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **{k: v for k, v in sampler.items() if k not in ("seed", "denoise")},
        "noise_seed": 42, "model": ["10", 0], "add_noise": "enable"}}
    graph["11"] = graph["3"]  # a cycle-free second pass, ignored: the first sampler counts
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    read = png_params_read(_png(info))
    assert (read["seed"], read["checkpoint"], read["denoise"]) == (42, "random-sd15.safetensors", None)


def test_a1111_text_compressed_with_its_names_mapped_to_comfyuis():
    text = ("masterpiece, a castle\non a hill\nNegative prompt: lowres, bad hands\n"
            'Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 1234, Size: 768x512, Model hash: abcd, '
            'Model: dreamshaper_8, Denoising strength: 0.4, Lora hashes: "ink: 1234, oil: 5678", Version: v1.9')
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text, zip=True)  # zTXt
    read = png_params_read(_png(info))
    assert read["source"] == "a1111"
    assert (read["prompt"], read["negative_prompt"]) == ("masterpiece, a castle\non a hill", "lowres, bad hands")
    assert (read["steps"], read["sampler"], read["scheduler"], read["cfg"], read["seed"]) == (
        30, "dpmpp_2m", "karras", 5.5, 1234)
    assert (read["width"], read["height"], read["checkpoint"], read["denoise"]) == (768, 512, "dreamshaper_8", 0.4)


def test_unknown_values_are_dropped_not_passed_on():
    stored = png_with_parameters(_png(), _params(sampler="rm -rf", steps="many", cfg=float("nan"), inputs=[1]))
    read = png_params_read(stored)
    assert (read["sampler"], read["steps"], read["cfg"], read["inputs"]) == (None, None, None, None)
    assert read["prompt"] == CHINESE


@pytest.mark.parametrize("data, code", [
    (b"", png_params.NOT_PNG),
    (b"\xff\xd8\xff\xe0 a JPEG", png_params.NOT_PNG),
    (b"just some text", png_params.NOT_PNG),
])
def test_what_is_not_a_png_is_refused(data, code):
    with pytest.raises(PngParamsError) as caught:
        png_params_read(data)
    assert caught.value.code == code


def test_a_png_without_parameters_says_so():
    with pytest.raises(PngParamsError) as caught:
        png_params_read(_png())
    assert caught.value.code == png_params.NO_PARAMETERS


def test_a_truncated_or_corrupted_png_is_damaged():
    stored = png_with_parameters(_png(), _params())
    with pytest.raises(PngParamsError) as caught:
        png_params_read(stored[:30])
    assert caught.value.code == png_params.DAMAGED
    flipped = bytearray(stored)
    flipped[stored.index(b"easel") + 10] ^= 0xFF  # inside the easel chunk: its CRC fails
    flipped[stored.index(b"parameters") + 12] ^= 0xFF
    with pytest.raises(PngParamsError) as caught:
        png_params_read(bytes(flipped))
    assert caught.value.code == png_params.DAMAGED


def test_a_compressed_text_bomb_is_not_expanded():
    bomb = zlib.compress(b"Steps: 1, " + b"x" * (png_params.MAX_TEXT_BYTES * 4), 9)
    body = b"parameters\0\0" + bomb
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    plain = _png()
    with pytest.raises(PngParamsError) as caught:
        png_params_read(plain[:-12] + chunk + plain[-12:])
    assert caught.value.code == png_params.NO_PARAMETERS


def test_a_deeply_nested_easel_chunk_is_not_a_crash():
    stored = png_with_parameters(_png(), _params())
    text = "[" * 100000 + "]" * 100000
    chunk = png_params.text_chunk("easel", text)
    with pytest.raises(PngParamsError):
        png_params_read(_png()[:-12] + chunk + _png()[-12:])
    assert png_params_read(stored)["source"] == "easel"


# --- where results are stored -------------------------------------------------------


@pytest.fixture
def finished(catalog, make_user):
    from generation.models import GenerationTask, TaskStatus
    from models_catalog.selectors import template_default

    owner = make_user("alice")
    return GenerationTask.objects.create(
        user=owner, prompt=CHINESE, negative_prompt="模糊", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        template=template_default(), width=16, height=12, steps=4, cfg=7, sampler="euler", scheduler="normal",
        seed=123456789, batch_size=2, status=TaskStatus.COMPLETED, inputs={},
    )


def test_result_store_writes_the_tasks_parameters_into_the_png(finished):
    from generation.gallery.results import result_store

    image = result_store(task=finished, index=1, data=_comfy_png())
    with image.file.open("rb") as stored:
        data = stored.read()
    assert image.size_bytes == len(data)
    read = png_params_read(data)
    assert (read["source"], read["prompt"], read["seed"], read["batch_index"], read["template"]) == (
        "easel", CHINESE, 123456789, 1, finished.template.slug)
    assert (read["checkpoint"], read["width"], read["height"]) == ("demo-sd15.safetensors", 16, 12)
    assert {key for _, key in _text_chunks(data)} == {b"prompt", b"workflow", b"easel", b"parameters"}


def test_a_share_link_hands_out_none_of_the_parameters(finished, client):
    from generation.gallery.results import result_store
    from generation.gallery.sharing import task_share

    image = result_store(task=finished, index=0, data=_comfy_png())
    token = task_share(task=finished)
    response = client.get(reverse("generation:shared_image", args=[token, image.pk]) + "?download=1")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert _text_chunks(body) == []
    assert CHINESE.encode() not in body and b"easel" not in body and b"123456789" not in body
    with pytest.raises(PngParamsError):
        png_params_read(body)


# --- the API ------------------------------------------------------------------------


def _upload(data: bytes, name: str = "picture.png") -> dict:
    return {"image": SimpleUploadedFile(name, data, content_type="image/png")}


@pytest.mark.django_db
def test_the_api_needs_a_sign_in(client):
    response = client.post(URL, _upload(_comfy_png()))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_api_reads_an_easel_picture_and_names_the_catalogs_model(catalog, make_user, api_client_for):
    api = api_client_for(make_user())
    response = api.post(URL, _upload(png_with_parameters(_png(), _params(model_name="gone"))), format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["source"], body["prompt"], body["model_name"], body["seed"]) == (
        "easel", CHINESE, "demo-sd15", 9223372036854775807)  # found by its file name


def test_the_api_maps_an_a1111_model_name_by_its_file_stem(catalog, make_user, api_client_for):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Model: demo-sd15")
    body = api_client_for(make_user()).post(URL, _upload(_png(info)), format="multipart").json()
    assert (body["model_name"], body["sampler"], body["checkpoint"]) == ("demo-sd15", "euler_ancestral", "demo-sd15")


def test_the_api_gives_no_model_for_a_checkpoint_the_catalog_lacks(catalog, make_user, api_client_for):
    body = api_client_for(make_user()).post(URL, _upload(_comfy_png()), format="multipart").json()
    assert (body["source"], body["model_name"], body["checkpoint"]) == ("comfyui", None, "random-sd15.safetensors")


@pytest.mark.parametrize("data, status, code", [
    (b"GIF89a not a png", 415, "unsupported_media_type"),
    (_png(), 400, "no_parameters"),
    (png_with_parameters(_png(), _params())[:40], 400, "damaged"),
    (b"", 400, "invalid"),
])
def test_the_api_refuses_what_it_cannot_read_with_the_error_body(catalog, make_user, api_client_for, data, status,
                                                                 code):
    response = api_client_for(make_user()).post(URL, _upload(data), format="multipart")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "image" in error["fields"]


def test_the_api_refuses_a_file_over_the_upload_limit(catalog, make_user, api_client_for, settings):
    settings.EASEL_MAX_UPLOAD_BYTES = 1000
    response = api_client_for(make_user()).post(URL, _upload(_comfy_png() + b"\0" * 2000), format="multipart")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_the_api_reads_only_the_posted_file_and_keeps_nothing(finished, make_user, api_client_for):
    """Another user's stored pictures are never looked at: the answer comes from the
    posted bytes alone, and nothing is stored from them."""
    from generation.gallery.results import result_store
    from generation.models import GeneratedImage, SourceImage

    result_store(task=finished, index=0, data=_comfy_png())
    stranger = api_client_for(make_user("mallory"))
    images, sources = GeneratedImage.objects.count(), SourceImage.objects.count()
    body = stranger.post(URL, _upload(_comfy_png()), format="multipart").json()
    assert body["prompt"] == "a photo of a cat" and CHINESE not in json.dumps(body, ensure_ascii=False)
    assert (GeneratedImage.objects.count(), SourceImage.objects.count()) == (images, sources)


def test_the_api_answers_in_chinese(catalog, make_user, api_client_for):
    api = api_client_for(make_user())
    response = api.post(URL, _upload(_png()), format="multipart", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json()["error"]["message"] == "这张图片没有记录它是如何生成的：其中没有 Easel 能读取的设置。"


def test_the_api_is_rate_limited_like_the_others(catalog, make_user, api_client_for, settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "user": "2/min"}
    settings.REST_FRAMEWORK = rest
    api = api_client_for(make_user())
    codes = [api.post(URL, _upload(_comfy_png()), format="multipart").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_the_schema_documents_the_endpoint(client, db):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"][URL]["post"]
    assert operation["operationId"] == "generation_parameters_from_png"
    assert {"200", "400", "401", "413", "415", "429"} <= set(operation["responses"])
    assert "multipart/form-data" in operation["requestBody"]["content"]
