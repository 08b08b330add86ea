"""The shipped tools end to end through the API: LoRAs, hires fix, upscaling and inpainting.

Each request goes through the REST API, a real qcluster runs it on the demo engine on a
real port (which speaks ComfyUI's protocol and validates graphs as ComfyUI 0.3.64 does),
and the result is checked for what the tool promises. The acceptance walk of issue 12
(LoRA → inpaint → upscale, on that one picture) is the last test.
"""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageDraw

from generation.fleet.dispatch import dispatch
from generation.models import GeneratedImage, GenerationTask
from models_catalog.models import Checkpoint, ComfyBackend, ModelFile
from tests.conftest import COMFYUI_CAPTURES, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

OBJECT_INFO = json.loads((COMFYUI_CAPTURES / "object_info.json").read_text())


def png(color=(200, 60, 40), size=(64, 64), name="source.png") -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = name
    return buffer


def mask_png(size=(64, 64), box=(16, 16, 48, 48)) -> io.BytesIO:
    """White where the picture is to be redrawn, black elsewhere (LoadImageMask's red channel)."""
    image = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "mask.png"
    return buffer


def upload(client, picture) -> int:
    response = client.post("/api/v1/uploads", {"image": picture}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def run(client, body: dict) -> dict:
    response = client.post("/api/v1/generation/create-async", body, format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    final = wait_for(
        lambda: (s := client.get(f"/api/v1/generation/status/{task_id}").json())["status"]
        in ("completed", "failed", "cancelled") and s,
        timeout=90, message=f"task {task_id} to end",
    )
    assert final["status"] == "completed", final
    return final


def assert_valid_for_comfyui(graph: dict) -> None:
    """Every node class and input name of a rendered graph is one a real ComfyUI 0.3.64 knows."""
    for node_id, node in graph.items():
        info = OBJECT_INFO.get(node["class_type"])
        assert info is not None, f"{node_id}: unknown class {node['class_type']}"
        known = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert set(node["inputs"]) <= set(known), (node_id, set(node["inputs"]) - set(known))


def result_picture(task_id: int) -> Image.Image:
    image = GeneratedImage.objects.filter(task_id=task_id).order_by("index").first()
    with image.file.open("rb") as handle:
        picture = Image.open(io.BytesIO(handle.read()))
        picture.load()
    return picture


@pytest.fixture
def tools(engine_catalog):
    assert set(ModelFile.objects.filter(kind="lora", enabled=True).values_list("file_name", flat=True)) >= {
        "demo-lora-ink.safetensors", "demo-lora-neon.safetensors"}
    assert ModelFile.objects.filter(kind="upscale_model", enabled=True).exists()
    return engine_catalog


def test_the_template_api_describes_each_tool(tools, make_user, api_client_for):
    client = api_client_for(make_user())
    body = client.get("/api/v1/templates/txt2img-loras").json()
    schema = body["schema"]
    lora = schema["properties"]["inputs"]["properties"]["lora_1"]
    assert lora["x-easel-kind"] == "file" and lora["x-easel-file-kind"] == "lora"
    assert "demo-lora-ink.safetensors" in lora["enum"] and None in lora["enum"]
    strength = schema["properties"]["inputs"]["properties"]["lora_1_strength"]
    assert strength["type"] == "number" and strength["minimum"] == -4 and strength["maximum"] == 4
    assert strength["default"] == 1.0
    assert schema["properties"]["prompt"]["x-easel-kind"] == "string"
    assert "prompt" in schema["required"]
    upscale = client.get("/api/v1/templates/upscale").json()["schema"]
    assert "prompt" not in upscale["properties"] and upscale["required"] == ["source_image"]
    assert upscale["properties"]["inputs"]["properties"]["upscale_model"]["enum"] == ["demo-upscale-2x.pth"]
    inpaint = client.get("/api/v1/templates/inpaint").json()["schema"]
    assert inpaint["properties"]["inputs"]["properties"]["mask"]["x-easel-kind"] == "mask"
    assert inpaint["properties"]["inputs"]["required"] == ["mask"]
    assert client.get("/api/v1/templates/nope").status_code == 404


def test_loras_hires_and_upscale_run_on_the_engine(tools, qcluster, make_user, api_client_for):
    client = api_client_for(make_user(max_concurrent_tasks=4))
    done = run(client, {
        "template": "txt2img-loras", "prompt": "a fox", "model_name": "demo-sd15",
        "inputs": {"lora_1": "demo-lora-ink.safetensors", "lora_1_strength": 0.8,
                   "lora_2": "demo-lora-neon.safetensors"},
    })
    assert done["inputs"]["lora_1"] == "demo-lora-ink.safetensors" and done["inputs"]["lora_3"] is None
    task = GenerationTask.objects.get(pk=done["id"])
    graph = task.rendered_prompt
    assert_valid_for_comfyui(graph)
    loras = {n["inputs"]["lora_name"]: n["inputs"] for n in graph.values() if n["class_type"] == "LoraLoader"}
    # The two chosen LoRAs are chained; the two empty slots are taken out of the graph.
    assert set(loras) == {"demo-lora-ink.safetensors", "demo-lora-neon.safetensors"}
    assert loras["demo-lora-ink.safetensors"]["strength_model"] == 0.8
    assert loras["demo-lora-neon.safetensors"]["strength_model"] == 1.0
    assert graph["3"]["inputs"]["model"] == ["11", 0] and graph["6"]["inputs"]["clip"] == ["11", 1]
    assert task.required_files == {"lora": ["demo-lora-ink.safetensors", "demo-lora-neon.safetensors"]}

    hires = run(client, {"template": "hires-fix", "prompt": "a fox", "width": 64, "height": 64,
                         "inputs": {"hires_scale": 2, "hires_denoise": 0.4}})
    assert_valid_for_comfyui(GenerationTask.objects.get(pk=hires["id"]).rendered_prompt)
    assert result_picture(hires["id"]).size == (128, 128)

    source = upload(client, png(size=(48, 32)))
    big = run(client, {"template": "upscale", "source_image": source,
                       "inputs": {"upscale_model": "demo-upscale-2x.pth"}})
    assert_valid_for_comfyui(GenerationTask.objects.get(pk=big["id"]).rendered_prompt)
    assert result_picture(big["id"]).size == (96, 64)
    assert big["prompt"] == "" and big["model_name"] == ""


def test_inpaint_redraws_the_masked_area_and_keeps_the_rest(tools, qcluster, make_user, api_client_for):
    client = api_client_for(make_user())
    source = upload(client, png(color=(30, 140, 220)))
    mask = upload(client, mask_png())
    done = run(client, {"template": "inpaint", "prompt": "a red door", "source_image": source,
                        "inputs": {"mask": mask}})
    task = GenerationTask.objects.get(pk=done["id"])
    graph = task.rendered_prompt
    assert_valid_for_comfyui(graph)
    mask_node = next(n for n in graph.values() if n["class_type"] == "LoadImageMask")
    assert mask_node["inputs"]["image"].startswith("easel/easel-")
    picture = result_picture(done["id"]).convert("RGB")
    assert picture.size == (64, 64)
    # Outside the mask the source is kept; inside, the engine drew something else.
    assert picture.getpixel((2, 2)) == (30, 140, 220)
    inside = [picture.getpixel((x, y)) for x in range(20, 44, 4) for y in range(20, 44, 4)]
    assert any(pixel != (30, 140, 220) for pixel in inside)


def test_inputs_are_checked_at_the_edge(tools, make_user, api_client_for):
    client = api_client_for(make_user())
    other = api_client_for(make_user())

    def refused(body) -> dict:
        response = client.post("/api/v1/generation/create-async", body, format="json")
        assert response.status_code == 400, response.content
        return response.json()["error"]["fields"]

    fields = refused({"template": "txt2img-loras", "prompt": "x",
                      "inputs": {"lora_1": "nope.safetensors", "lora_1_strength": 9, "lora_2_strength": "1",
                                 "colour": "red"}})
    assert "nope.safetensors" in fields["lora_1"][0]
    assert "at most 4" in fields["lora_1_strength"][0]
    assert "number" in fields["lora_2_strength"][0]  # a JSON body sends numbers as numbers
    assert "colour" in fields["inputs"][0]
    # A LoRA staff disabled is not offered.
    ModelFile.objects.filter(file_name="demo-lora-ink.safetensors").update(enabled=False)
    assert "demo-lora-ink.safetensors" in refused(
        {"template": "txt2img-loras", "prompt": "x", "inputs": {"lora_1": "demo-lora-ink.safetensors"}})["lora_1"][0]
    # The mask is required, and must be the user's own upload.
    source = upload(client, png())
    assert "mask" in refused({"template": "inpaint", "prompt": "x", "source_image": source})
    foreign = upload(other, mask_png())
    assert "mask" in refused({"template": "inpaint", "prompt": "x", "source_image": source,
                              "inputs": {"mask": foreign}})
    # An upscale takes no prompt and no model; a text-to-image still needs its prompt.
    assert "source_image" in refused({"template": "upscale"})
    assert "prompt" in refused({"template": "txt2img-loras"})
    assert "model_name" in refused({"template": "upscale", "source_image": source, "model_name": "demo-sd15"})
    assert not GenerationTask.objects.exists()


def test_template_defaults_are_what_a_task_gets(tools, make_user, api_client_for):
    """Request → template input default → checkpoint default → studio default."""
    from models_catalog.models import TemplateInput, WorkflowTemplate

    client = api_client_for(make_user(max_concurrent_tasks=5))
    template = WorkflowTemplate.objects.get(slug="txt2img-basic")
    TemplateInput.objects.filter(template=template, name="cfg").update(default=6.0)
    TemplateInput.objects.filter(template=template, name="negative_prompt").update(default="blurry")
    Checkpoint.objects.update(default_cfg=7.5, default_steps=9)
    listed = {p["name"]: p for p in client.get("/api/v1/templates/txt2img-basic").json()["parameters"]}
    assert listed["cfg"]["default"] == 6.0 and listed["negative_prompt"]["default"] == "blurry"
    body = client.post("/api/v1/generation/create-async", {"prompt": "x"}, format="json").json()
    assert (body["cfg"], body["negative_prompt"], body["steps"]) == (6.0, "blurry", 9)
    body = client.post("/api/v1/generation/create-async", {"prompt": "x", "cfg": 3}, format="json").json()
    assert body["cfg"] == 3.0
    # Upscaling runs without a checkpoint: nothing of a model's applies.
    source = upload(client, png())
    body = client.post("/api/v1/generation/create-async", {"template": "upscale", "source_image": source},
                       format="json").json()
    # The upscale model nobody named is the first the catalog offers.
    assert body["inputs"] == {"upscale_model": "demo-upscale-2x.pth", "scale_by": 1.0}


def test_routing_waits_for_a_backend_with_the_chosen_lora(tools, make_user, api_client_for):
    client = api_client_for(make_user())
    ink = ModelFile.objects.get(file_name="demo-lora-ink.safetensors")
    ink.backends.clear()  # the only backend no longer has it (but staff keep it offered)
    away = ComfyBackend.objects.create(name="away", base_url="http://127.0.0.1:9", is_online=False)
    ink.backends.add(away)
    response = client.post("/api/v1/generation/create-async",
                           {"prompt": "x", "template": "txt2img-loras",
                            "inputs": {"lora_1": "demo-lora-ink.safetensors"}}, format="json")
    assert response.status_code == 202, response.content
    task = GenerationTask.objects.get(pk=response.json()["id"])
    assert task.backend_id is None  # nothing online holds it: it waits
    plain = client.post("/api/v1/generation/create-async", {"prompt": "x", "template": "txt2img-loras"},
                        format="json").json()
    # (A create leaves the pass to a pump when one is alive, as the session's may be.)
    dispatch(probe=False)
    assert GenerationTask.objects.get(pk=task.pk).backend_id is None
    assert GenerationTask.objects.get(pk=plain["id"]).backend_id == tools["backend"].pk


def test_comfyuis_refusal_of_a_custom_input_is_put_beside_it(tools, qcluster, make_user, api_client_for):
    """The catalog believes the engine has a LoRA it does not: ComfyUI's node_errors on that
    LoraLoader come back under the input's own name."""
    ModelFile.objects.create(kind="lora", file_name="ghost.safetensors", enabled=True).backends.add(
        tools["backend"])
    client = api_client_for(make_user())
    response = client.post("/api/v1/generation/create-async", {
        "template": "txt2img-loras", "prompt": "a fox",
        "inputs": {"lora_1": "demo-lora-ink.safetensors", "lora_2": "ghost.safetensors"},
    }, format="json")
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    final = wait_for(
        lambda: (s := client.get(f"/api/v1/generation/status/{task_id}").json())["status"]
        in ("completed", "failed") and s,
        timeout=60, message="the refused task to fail",
    )
    assert final["status"] == "failed" and final["error_code"] == "invalid_parameters", final
    assert "ghost.safetensors" in " ".join(final["error_fields"]["lora_2"]), final["error_fields"]
    assert "lora_1" not in final["error_fields"]


def test_a_mask_must_have_the_size_of_its_picture(tools, make_user, api_client_for):
    """The API and the page share the rule (generation.services): a mask of another size is
    refused under its own input's name, saying both sizes; nothing is stored."""
    client = api_client_for(make_user())
    source = upload(client, png(size=(64, 48)))
    wrong = upload(client, mask_png(size=(64, 64)))
    response = client.post("/api/v1/generation/create-async", {
        "template": "inpaint", "prompt": "x", "source_image": source, "inputs": {"mask": wrong}}, format="json")
    assert response.status_code == 400, response.content
    message = response.json()["error"]["fields"]["mask"][0]
    assert "64 × 64" in message and "64 × 48" in message and "size" in message
    assert not GenerationTask.objects.exists()
    right = upload(client, mask_png(size=(64, 48), box=(8, 8, 24, 24)))
    response = client.post("/api/v1/generation/create-async", {
        "template": "inpaint", "prompt": "x", "source_image": source, "inputs": {"mask": right}}, format="json")
    assert response.status_code == 202, response.content
