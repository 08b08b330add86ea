"""Source images for img2img: only real pictures get in, clean, once, and only for their owner."""
from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image, PngImagePlugin

from generation.gallery.uploads import source_image_create, source_image_delete, source_image_from_result
from generation.models import GeneratedImage, GenerationTask, SourceImage, TaskStatus

pytestmark = pytest.mark.django_db

URL = "/api/v1/uploads"


# --- pictures -------------------------------------------------------------------------


def _png(size=(40, 30), color="red", mode="RGB", text: dict | None = None) -> bytes:
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    Image.new(mode, size, color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _jpeg(size=(40, 20), exif: dict | None = None) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, "blue")
    tags = Image.Exif()
    for tag, value in (exif or {}).items():
        tags[tag] = value
    image.save(out, "JPEG", exif=tags.tobytes())
    return out.getvalue()


def _noisy_png(size=(64, 64)) -> bytes:
    """A PNG that does not compress: big enough on disk to cut or to go over a limit."""
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, "PNG")
    return out.getvalue()


def _webp(size=(24, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (0, 255, 0, 128)).save(out, "WEBP", lossless=True)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture: what a decompression bomb looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _upload(client, data: bytes, name: str, content_type: str = "image/png"):
    return client.post(URL, {"image": SimpleUploadedFile(name, data, content_type=content_type)},
                       format="multipart")


def _stored(source_id: int) -> bytes:
    source = SourceImage.objects.get(pk=source_id)
    with source.file.open("rb") as f:
        return f.read()


@pytest.fixture
def user(make_user):
    return make_user("ana")


@pytest.fixture
def client(user, api_client_for):
    return api_client_for(user)


# --- accepted formats -------------------------------------------------------------------


def test_png_is_stored_reencoded_without_its_text_chunks(client):
    response = _upload(client, _png(text={"parameters": "secret prompt"}), "cat.png")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in ("width", "height", "content_type")} == {
        "width": 40, "height": 30, "content_type": "image/png"}
    for key in ("id", "url", "size_bytes", "created_at"):
        assert key in body
    stored = _stored(body["id"])
    assert b"secret prompt" not in stored
    assert "parameters" not in Image.open(io.BytesIO(stored)).info
    assert body["size_bytes"] == len(stored)
    assert SourceImage.objects.get(pk=body["id"]).original_name == "cat.png"


def test_jpeg_is_stored_as_jpeg_without_exif_and_upright(client):
    # Orientation 6: the camera held sideways; the tag says "rotate 90° clockwise to view".
    data = _jpeg(size=(40, 20), exif={0x010E: "secret description", 0x0112: 6})
    response = _upload(client, data, "photo.JPG", content_type="image/jpeg")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["content_type"] == "image/jpeg"
    assert (body["width"], body["height"]) == (20, 40)
    stored = _stored(body["id"])
    assert b"secret description" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and not image.getexif()
    assert "exif" not in image.info


def test_webp_is_stored_as_png_keeping_transparency(client):
    response = _upload(client, _webp(), "leaf.webp", content_type="image/webp")
    assert response.status_code == 201, response.json()
    image = Image.open(io.BytesIO(_stored(response.json()["id"])))
    assert response.json()["content_type"] == "image/png"
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 128


def test_a_name_without_extension_is_accepted(client):
    # Scripts often post a blob with no file name: the content decides.
    response = _upload(client, _png(), "blob", content_type="application/octet-stream")
    assert response.status_code == 201, response.json()


def test_animated_picture_keeps_its_first_frame(client):
    out = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    response = _upload(client, out.getvalue(), "anim.png")
    assert response.status_code == 201, response.json()
    image = Image.open(io.BytesIO(_stored(response.json()["id"])))
    assert getattr(image, "n_frames", 1) == 1
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_the_same_picture_twice_is_stored_once(client, user):
    first = _upload(client, _png(), "a.png").json()
    # Different metadata, same pixels: the clean re-encoding is identical.
    second = _upload(client, _png(text={"Software": "x"}), "b.png").json()
    assert first["id"] == second["id"]
    assert SourceImage.objects.filter(user=user).count() == 1


def test_two_users_uploading_the_same_picture_get_their_own_rows(make_user):
    a, b = make_user(), make_user()
    first = source_image_create(user=a, file=ContentFile(_png(), name="x.png"))
    second = source_image_create(user=b, file=ContentFile(_png(), name="x.png"))
    assert first.pk != second.pk and first.sha256 == second.sha256


# --- refused uploads --------------------------------------------------------------------


def test_a_text_file_named_png_is_415_with_the_error_body(client):
    response = _upload(client, b"hello, I am not a picture\n" * 10, "evil.png")
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["message"] and "image" in error["fields"]
    assert not SourceImage.objects.exists()


def test_a_gif_is_415(client):
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    response = _upload(client, out.getvalue(), "x.gif", content_type="image/gif")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_png_name_holding_a_jpeg_is_400(client):
    response = _upload(client, _jpeg(), "photo.png", content_type="image/png")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]["image"] == ["The file name says PNG but the file is a JPEG."]


def test_over_the_byte_limit_is_413(client, settings):
    settings.EASEL_MAX_UPLOAD_BYTES = 100
    data = _noisy_png()
    assert len(data) > 100
    response = _upload(client, data, "big.png")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large" and "image" in error["fields"]
    assert not SourceImage.objects.exists()


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(client):
    # 5000×5000 is over Easel's 4096² default yet under Pillow's own guard: Easel's check decides.
    response = _upload(client, _png_header_only(5000, 5000), "bomb.png")
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["message"]


def test_a_decompression_bomb_is_400(client):
    # 30000×30000 also trips Pillow's own DecompressionBombError while opening.
    response = _upload(client, _png_header_only(30000, 30000), "bomb.png")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["image"]


def test_pillows_bomb_warning_becomes_a_clean_error(client, settings, monkeypatch):
    settings.EASEL_MAX_UPLOAD_PIXELS = 10**9
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns past 1000, raises past 2000
    response = _upload(client, _png(size=(40, 30)), "x.png")  # 1200 pixels: the warning
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["message"]


def test_a_smaller_pixel_limit_is_honoured(client, settings):
    settings.EASEL_MAX_UPLOAD_PIXELS = 100
    assert _upload(client, _png(size=(20, 20)), "x.png").status_code == 400
    assert _upload(client, _png(size=(10, 10)), "x.png").status_code == 201


def test_a_truncated_file_is_400(client):
    data = _noisy_png((200, 200))
    response = _upload(client, data[: len(data) // 2], "cut.png")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["image"]
    assert not SourceImage.objects.exists()


def test_a_missing_file_is_400(client):
    response = client.post(URL, {}, format="multipart")
    assert response.status_code == 400
    assert "image" in response.json()["error"]["fields"]


# --- reading, listing, deleting ------------------------------------------------------------


def test_list_is_the_callers_newest_first_and_paginated(client, make_user, user):
    other = make_user()
    source_image_create(user=other, file=ContentFile(_png(color="white"), name="o.png"))
    ids = [_upload(client, _png(color=c), f"{c}.png").json()["id"] for c in ("red", "green", "blue")]
    body = client.get(URL).json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == ids[::-1]
    assert client.get(URL, {"page_size": 2}).json()["next"]


def test_list_query_count_does_not_grow_with_uploads(client, user):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(URL).status_code == 200
        return len(ctx.captured_queries)

    source_image_create(user=user, file=ContentFile(_png(color="red"), name="1.png"))
    one = queries()
    for color in ("green", "blue", "white", "black"):
        source_image_create(user=user, file=ContentFile(_png(color=color), name="n.png"))
    assert queries() == one


def test_owner_reads_metadata_and_file(client):
    body = _upload(client, _png(), "a.png").json()
    assert client.get(f"{URL}/{body['id']}").json()["id"] == body["id"]
    response = client.get(body["url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == _stored(body["id"])


def test_another_user_gets_404_everywhere(client, make_user, api_client_for):
    source_id = _upload(client, _png(), "a.png").json()["id"]
    stranger = api_client_for(make_user())
    for response in (
        stranger.get(f"{URL}/{source_id}"),
        stranger.get(f"{URL}/{source_id}/file"),
        stranger.delete(f"{URL}/{source_id}"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert stranger.get(URL).json()["count"] == 0
    assert SourceImage.objects.filter(pk=source_id).exists()


def test_staff_too_get_404_for_someone_elses_upload(client, make_user, api_client_for):
    source_id = _upload(client, _png(), "a.png").json()["id"]
    staff = api_client_for(make_user(is_staff=True))
    assert staff.get(f"{URL}/{source_id}").status_code == 404


def test_delete_removes_row_and_file(client, django_capture_on_commit_callbacks):
    source_id = _upload(client, _png(), "a.png").json()["id"]
    source = SourceImage.objects.get(pk=source_id)
    storage, name = source.file.storage, source.file.name
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"{URL}/{source_id}").status_code == 204
    assert not SourceImage.objects.filter(pk=source_id).exists()
    assert not storage.exists(name)
    assert client.get(f"{URL}/{source_id}").status_code == 404


def test_deleting_a_used_source_keeps_the_task(user, catalog, django_capture_on_commit_callbacks):
    source = source_image_create(user=user, file=ContentFile(_png(), name="a.png"))
    task = GenerationTask.objects.create(
        user=user, prompt="p", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7, sampler="euler",
        scheduler="normal", seed=1, source_image=source,
    )
    with django_capture_on_commit_callbacks(execute=True):
        source_image_delete(source=source)
    task.refresh_from_db()
    assert task.source_image is None


def test_uploading_again_after_delete_stores_a_fresh_copy(client):
    first = _upload(client, _png(), "a.png").json()["id"]
    client.delete(f"{URL}/{first}")
    second = _upload(client, _png(), "a.png")
    assert second.status_code == 201
    assert client.get(second.json()["url"]).status_code == 200


# --- from a result ---------------------------------------------------------------------


def _finished_image(owner, catalog, status=TaskStatus.COMPLETED) -> GeneratedImage:
    task = GenerationTask.objects.create(
        user=owner, prompt="a red square", model_name="demo-sd15", checkpoint=catalog["checkpoint"], width=64,
        height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1, status=status,
    )
    data = _png(size=(64, 64), text={"prompt": "a red square"})
    image = GeneratedImage(task=task, index=0, width=64, height=64, seed=1, size_bytes=len(data))
    image.file.save("x.png", ContentFile(data), save=False)
    image.save()
    return image


def test_own_result_becomes_a_source(client, user, catalog):
    image = _finished_image(user, catalog)
    response = client.post(f"{URL}/from-result/{image.pk}")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["width"], body["height"], body["content_type"]) == (64, 64, "image/png")
    assert b"a red square" not in _stored(body["id"])
    # Picking it again gives the same source.
    assert client.post(f"{URL}/from-result/{image.pk}").json()["id"] == body["id"]
    assert SourceImage.objects.filter(user=user).count() == 1


def test_someone_elses_result_is_404(client, make_user, catalog):
    image = _finished_image(make_user(), catalog)
    response = client.post(f"{URL}/from-result/{image.pk}")
    assert response.status_code == 404
    assert not SourceImage.objects.exists()


def test_from_result_service_checks_the_owner(make_user, catalog):
    from django.core.exceptions import PermissionDenied

    image = _finished_image(make_user(), catalog)
    with pytest.raises(PermissionDenied):
        source_image_from_result(user=make_user(), image=image)


# --- used by a generation ------------------------------------------------------------------


def test_an_upload_starts_an_img2img_generation(client, user, catalog):
    from generation.services import generation_create
    from models_catalog.models import WorkflowTemplate

    if not WorkflowTemplate.objects.filter(slug="img2img-basic", enabled=True).exists():
        pytest.skip("the built-in img2img-basic template is not there yet (ensure_builtin_templates)")
    source_id = _upload(client, _png(size=(64, 64)), "start.png").json()["id"]
    task = generation_create(user=user, prompt="make it blue", source_image=source_id)
    assert task.source_image_id == source_id
    assert task.template.slug == "img2img-basic"
    assert task.denoise is not None
