"""img2img end to end: upload through the API, the job uploads it to the engine, the result differs."""
import io

import pytest
import requests
from PIL import Image

from generation.models import GenerationTask
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def png(color="red", size=(96, 64)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "source.png"
    return buffer


def test_upload_then_img2img_runs_on_the_engine(engine_catalog, qcluster, make_user, api_client_for):
    client = api_client_for(make_user())
    upload = client.post("/api/v1/uploads", {"image": png()}, format="multipart")
    assert upload.status_code == 201, upload.content
    source_id = upload.json()["id"]
    response = client.post(
        "/api/v1/generation/create-async",
        {"prompt": "make it blue", "model_name": "demo-sd15", "source_image": source_id, "denoise": 0.5},
        format="json",
    )
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    final = wait_for(
        lambda: (s := client.get(f"/api/v1/generation/status/{task_id}").json())["status"]
        in ("completed", "failed") and s,
        timeout=60, message="img2img to finish",
    )
    assert final["status"] == "completed", final
    task = GenerationTask.objects.get(pk=task_id)
    assert task.template.slug == "img2img-basic" and task.denoise == 0.5
    graph = task.rendered_prompt
    load = next(n for n in graph.values() if n["class_type"] == "LoadImage")
    assert load["inputs"]["image"].startswith("easel/easel-")
    # The engine holds the uploaded source under that name.
    folder, name = load["inputs"]["image"].split("/", 1)
    engine = engine_catalog["engine"]
    got = requests.get(f"{engine.url}/view", params={"filename": name, "subfolder": folder, "type": "input"},
                       timeout=5)
    assert got.status_code == 200
    with Image.open(io.BytesIO(got.content)) as img:
        assert img.size == (96, 64)


def test_img2img_without_a_source_or_with_someone_elses_is_refused(engine_catalog, make_user, api_client_for):
    owner, other = api_client_for(make_user()), api_client_for(make_user())
    source_id = owner.post("/api/v1/uploads", {"image": png()}, format="multipart").json()["id"]
    response = other.post("/api/v1/generation/create-async",
                          {"prompt": "x", "source_image": source_id}, format="json")
    assert response.status_code == 400 and "source_image" in response.json()["error"]["fields"]
    response = owner.post("/api/v1/generation/create-async",
                          {"prompt": "x", "template": "img2img-basic"}, format="json")
    assert response.status_code == 400 and "source_image" in response.json()["error"]["fields"]
    response = owner.post("/api/v1/generation/create-async",
                          {"prompt": "x", "denoise": 0.5}, format="json")
    assert response.status_code == 400 and "denoise" in response.json()["error"]["fields"]
