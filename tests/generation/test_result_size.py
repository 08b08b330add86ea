"""A task records the size of the picture it produced, so every view agrees on it.

img2img keeps the source's size whatever width and height the request carried (the
checkpoint's default, 512 × 512 here): end to end on the demo engine with a real
qcluster, the task page, history, API and admin must all say 640 × 480.
"""
from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from generation.models import GenerationTask
from models_catalog.models import Checkpoint
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def _png(size) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "source.png"
    return buffer


def test_img2img_task_takes_the_size_of_its_result_everywhere(engine_catalog, qcluster, make_user, api_client_for):
    # The checkpoint's default size is what an img2img request without a size carries.
    Checkpoint.objects.update(default_width=512, default_height=512)
    owner = make_user()
    api = api_client_for(owner)
    source = api.post("/api/v1/uploads", {"image": _png((640, 480))}, format="multipart")
    assert source.status_code == 201, source.content
    created = api.post(
        "/api/v1/generation/create-async",
        {"prompt": "the same scene at night", "model_name": "demo-sd15", "source_image": source.json()["id"],
         "denoise": 0.5, "steps": 3},
        format="json",
    )
    assert created.status_code == 202, created.content
    task_id = created.json()["id"]
    assert (created.json()["width"], created.json()["height"]) == (512, 512)  # what was asked
    final = wait_for(
        lambda: (s := api.get(f"/api/v1/generation/status/{task_id}").json())["status"]
        in ("completed", "failed") and s,
        timeout=60, message="img2img to finish",
    )
    assert final["status"] == "completed", final

    # The API: the task and its picture agree.
    assert (final["width"], final["height"]) == (640, 480), final
    assert [(i["width"], i["height"]) for i in final["images"]] == [(640, 480)]
    listed = api.get("/api/v1/generation/history").json()["results"]
    assert [(t["width"], t["height"]) for t in listed if t["id"] == task_id] == [(640, 480)]
    task = GenerationTask.objects.get(pk=task_id)
    assert (task.width, task.height) == (640, 480)

    # The owner's pages.
    pages = Client()
    pages.force_login(owner)
    task_page = pages.get(f"/tasks/{task_id}/").content.decode()
    assert "640 × 480" in task_page and "512 × 512" not in task_page
    history = pages.get("/history/").content.decode()
    assert "640×480" in history and "512×512" not in history

    # The admin's task page.
    staff = Client()
    staff.force_login(make_user("boss", is_staff=True, is_superuser=True))
    admin_page = staff.get(f"/admin/generation/generationtask/{task_id}/change/").content.decode()
    width_at = admin_page.index("field-width")
    assert ">640<" in admin_page[width_at : width_at + 400]
    height_at = admin_page.index("field-height")
    assert ">480<" in admin_page[height_at : height_at + 400]
