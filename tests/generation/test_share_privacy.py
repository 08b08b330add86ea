"""A public share link gives the picture, not how it was made: no embedded workflow, seed,
negative prompt or file names. The owner's own download keeps the metadata."""
from __future__ import annotations

import io
import json

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image, PngImagePlugin

from generation.gallery.metadata import strip_metadata
from generation.gallery.sharing import task_share
from generation.models import GeneratedImage, GenerationTask, TaskStatus

# What ComfyUI's SaveImage writes into every PNG (tests/fixtures/comfyui/workflow_txt2img_api.json
# is such a prompt): the whole graph, with the negative prompt, the seed and the checkpoint.
SECRET_GRAPH = {"3": {"class_type": "KSampler", "inputs": {"seed": 123456789}},
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "secret-model.safetensors"}},
                "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "my secret negative prompt"}}}
TELLS = (b"secret-model", b"my secret negative prompt", b"123456789", b"workflow", b"prompt")


def comfy_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(SECRET_GRAPH))
    info.add_itxt("workflow", json.dumps({"nodes": [], "extra": SECRET_GRAPH}))
    info.add_text("parameters", "my secret negative prompt", zip=True)
    out = io.BytesIO()
    Image.new("RGB", (16, 12), "teal").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB").tobytes()


def test_png_text_chunks_go_and_the_pixels_stay():
    original = comfy_png()
    assert all(tell in original for tell in (b"secret-model", b"workflow"))
    clean, content_type = strip_metadata(original, "image/png")
    assert content_type == "image/png"
    assert not any(tell in clean for tell in TELLS)
    assert pixels(clean) == pixels(original)
    with Image.open(io.BytesIO(clean)) as picture:
        assert picture.info.get("prompt") is None and not getattr(picture, "text", {})


def test_jpeg_exif_and_comments_go():
    exif = Image.Exif()
    exif[0x010E] = "my secret negative prompt"  # ImageDescription
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "orange").save(out, "JPEG", exif=exif, comment=b"secret-model")
    original = out.getvalue()
    clean, content_type = strip_metadata(original, "image/jpeg")
    assert content_type == "image/jpeg" and b"Exif" in original and b"Exif" not in clean
    assert not any(tell in clean for tell in TELLS)
    assert pixels(clean) == pixels(original)


def test_webp_exif_goes_and_the_file_stays_valid():
    exif = Image.Exif()
    exif[0x010E] = "my secret negative prompt"
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "navy").save(out, "WEBP", exif=exif, lossless=True)
    original = out.getvalue()
    clean, content_type = strip_metadata(original, "image/webp")
    assert content_type == "image/webp" and b"EXIF" in original and b"EXIF" not in clean
    assert not any(tell in clean for tell in TELLS)
    assert pixels(clean) == pixels(original)


def test_another_format_is_re_encoded_without_metadata():
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "GIF", comment=b"my secret negative prompt")
    clean, content_type = strip_metadata(out.getvalue(), "image/gif")
    assert content_type == "image/png" and b"secret" not in clean


@pytest.mark.django_db
def test_a_share_link_serves_the_picture_without_its_workflow(make_user, client):
    owner = make_user("alice")
    task = GenerationTask.objects.create(
        user=owner, prompt="a red fox", model_name="demo-sd15", width=16, height=12, steps=4, cfg=7,
        sampler="euler", scheduler="normal", seed=123456789, status=TaskStatus.COMPLETED,
    )
    original = comfy_png()
    image = GeneratedImage(task=task, index=0, width=16, height=12, seed=1, size_bytes=len(original))
    image.file.save("out.png", ContentFile(original), save=False)
    image.thumbnail.save("thumb.webp", ContentFile(original), save=False)
    image.save()
    token = task_share(task=task)

    for name in ("generation:shared_image", "generation:shared_image_thumb"):
        response = client.get(reverse(name, args=[token, image.pk]))
        assert response.status_code == 200
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert not any(tell in body for tell in TELLS), name
        assert pixels(body) == pixels(original)
    download = client.get(reverse("generation:shared_image", args=[token, image.pk]) + "?download=1")
    assert download["Content-Disposition"].startswith("attachment;")

    client.force_login(owner)  # the owner's own file keeps how it was made
    mine = client.get(reverse("generation:image", args=[image.pk]) + "?download=1")
    assert b"secret-model" in b"".join(mine.streaming_content)
