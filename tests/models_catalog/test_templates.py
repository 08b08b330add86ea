"""Workflow templates: binding detection, validation, import (service and admin),
parameters for forms, the templates API, and the built-in templates on the demo engine."""
from __future__ import annotations

import copy
import io
import json
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from generation.comfy import ComfyClient, render_workflow
from models_catalog.builtin import IMG2IMG_BINDINGS, TXT2IMG_BINDINGS, ensure_builtin_templates
from models_catalog.models import ComfyBackend, TemplateInput, WorkflowTemplate
from models_catalog.templates import (
    bindings_detect,
    rows_from_bindings,
    template_import,
    template_inputs_create,
    template_parameters,
    template_specs_refresh,
    template_validate,
)
from tests.conftest import COMFYUI_CAPTURES

CAPTURES = COMFYUI_CAPTURES


def captured(name: str) -> dict:
    return json.loads((CAPTURES / f"workflow_{name}_api.json").read_text())


def relabel(graph: dict, mapping: dict[str, str], order: list[str]) -> dict:
    """The same graph with new node ids (links rewritten), nodes in `order` (new ids)."""
    out = {}
    for old, node in graph.items():
        node = copy.deepcopy(node)
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                node["inputs"][name] = [mapping[value[0]], value[1]]
        out[mapping[old]] = node
    return {nid: out[nid] for nid in order}


@pytest.fixture
def engine_info(demo_engine):
    return ComfyClient(demo_engine.url).object_info()


@pytest.fixture
def staff_client(client, db):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser(username="boss", email="boss@example.com", password="x")
    client.force_login(admin)
    return client


# --- detection --------------------------------------------------------------------


def test_detects_the_captured_txt2img_graph():
    assert bindings_detect(captured("txt2img")) == TXT2IMG_BINDINGS


def test_detects_the_captured_img2img_graph_with_denoise_and_image():
    found = bindings_detect(captured("img2img"))
    assert found == IMG2IMG_BINDINGS
    assert "width" not in found and "batch_size" not in found


def test_txt2img_does_not_expose_denoise():
    # Denoise below 1 on an empty latent only washes the picture out.
    assert "denoise" not in bindings_detect(captured("txt2img"))


def test_prompts_follow_the_sampler_links_not_node_order():
    # Negative encoder first and with the lowest id; every id changed.
    mapping = {"3": "31", "4": "12", "5": "7", "6": "40", "7": "2", "8": "5", "9": "100"}
    graph = relabel(captured("txt2img"), mapping, ["2", "40", "100", "31", "5", "12", "7"])
    found = bindings_detect(graph)
    assert found["prompt"] == ["40", "text"]
    assert found["negative_prompt"] == ["2", "text"]
    assert found["seed"] == ["31", "seed"]
    assert found["checkpoint"] == ["12", "ckpt_name"]
    assert found["width"] == ["7", "width"]
    assert bindings_detect(graph) == found  # deterministic


def test_ksampler_advanced_binds_noise_seed():
    graph = captured("txt2img")
    inputs = graph["3"]["inputs"]
    graph["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "enable", "noise_seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable",
            "model": inputs["model"], "positive": inputs["positive"], "negative": inputs["negative"],
            "latent_image": inputs["latent_image"],
        },
    }
    found = bindings_detect(graph)
    assert found["seed"] == ["3", "noise_seed"]
    assert found["scheduler"] == ["3", "scheduler"]
    assert "denoise" not in found
    assert found["prompt"] == ["6", "text"]


def test_linked_inputs_are_not_bound():
    graph = captured("txt2img")
    graph["10"] = {"class_type": "PrimitiveInt", "inputs": {"value": 5}}
    graph["3"]["inputs"]["seed"] = ["10", 0]
    graph["6"]["inputs"]["text"] = ["11", 0]
    found = bindings_detect(graph)
    assert "seed" not in found and "prompt" not in found
    assert found["steps"] == ["3", "steps"]


def test_a_shared_text_box_is_bound_once():
    graph = captured("txt2img")
    graph["3"]["inputs"]["negative"] = ["6", 0]
    found = bindings_detect(graph)
    assert found["prompt"] == ["6", "text"] and "negative_prompt" not in found


# --- validation -------------------------------------------------------------------


def test_captured_graphs_are_valid_on_the_demo_engine(engine_info):
    assert template_validate(graph=captured("txt2img"), bindings=TXT2IMG_BINDINGS, object_info=engine_info) == {}
    assert (
        template_validate(graph=captured("img2img"), bindings=IMG2IMG_BINDINGS, object_info=engine_info, kind="img2img")
        == {}
    )


def test_validation_reports_each_problem_on_its_node(engine_info):
    graph = captured("txt2img")
    graph["10"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    graph["6"]["inputs"]["colour"] = "red"
    graph["11"] = {"inputs": {"text": "x"}}
    bindings = {**TXT2IMG_BINDINGS, "cfg": ["3", "model"]}
    errors = template_validate(graph=graph, bindings=bindings, object_info=engine_info)
    assert "FancyUpscaler" in errors["10"][0]
    assert any("colour" in m for m in errors["6"])
    assert "class_type" in errors["11"][0]
    assert any("cfg" in m and "link" in m for m in errors["3"])
    assert set(errors) == {"3", "6", "10", "11"}


def test_ui_format_workflow_is_refused_with_how_to_export():
    ui = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [[1, 4, 0, 3, 0, "MODEL"]]}
    errors = template_validate(graph=ui, bindings={}, object_info={})
    assert list(errors) == ["graph"] and "API" in errors["graph"][0]
    assert "graph" in template_validate(graph=["not", "a", "dict"], bindings={}, object_info={})


def test_no_output_node(engine_info):
    graph = captured("txt2img")
    del graph["9"]
    errors = template_validate(graph=graph, bindings=TXT2IMG_BINDINGS, object_info=engine_info)
    assert list(errors) == ["graph"] and "SaveImage" in errors["graph"][0]


def test_output_node_flag_from_object_info_counts(engine_info):
    graph = captured("txt2img")
    graph["9"]["class_type"] = "MySaver"
    info = {**engine_info, "MySaver": {**engine_info["SaveImage"], "output_node": True}}
    assert template_validate(graph=graph, bindings=TXT2IMG_BINDINGS, object_info=info) == {}


def test_bindings_to_missing_nodes_and_inputs():
    graph = captured("txt2img")
    bindings = {"prompt": ["66", "text"], "seed": ["3", "noise_seed"], "col our": ["6", "text"]}
    errors = template_validate(graph=graph, bindings=bindings, object_info={})
    assert any("66" in m for m in errors["bindings"])
    assert any("col our" in m for m in errors["bindings"])
    assert "noise_seed" in errors["3"][0]


def test_img2img_kind_needs_an_image_binding():
    errors = template_validate(graph=captured("txt2img"), bindings=TXT2IMG_BINDINGS, object_info={}, kind="img2img")
    assert "image" in errors["bindings"][0]


def test_structural_checks_do_not_need_a_backend():
    graph = captured("txt2img")
    graph["10"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    assert template_validate(graph=graph, bindings=TXT2IMG_BINDINGS, object_info=None) == {}


# --- import -----------------------------------------------------------------------


@pytest.mark.django_db
def test_import_detects_bindings_and_kind_against_a_backend(demo_engine):
    backend = ComfyBackend.objects.create(name="demo", base_url=demo_engine.url, is_online=True)
    template = template_import(name="Mine", slug="mine", graph=captured("img2img"), backend=backend)
    assert template.kind == WorkflowTemplate.KIND_IMG2IMG
    assert template.bindings == IMG2IMG_BINDINGS
    assert template.enabled and not template.is_default and not template.builtin


@pytest.mark.django_db
def test_import_uses_an_online_backend_and_raises_per_node(demo_engine):
    ComfyBackend.objects.create(name="demo", base_url=demo_engine.url, is_online=True)
    graph = captured("txt2img")
    graph["5"]["class_type"] = "EmptySD3LatentImage"
    with pytest.raises(ValidationError) as caught:
        template_import(name="Bad", slug="bad", graph=graph)
    assert set(caught.value.message_dict) == {"5"}
    assert not WorkflowTemplate.objects.filter(slug="bad").exists()


@pytest.mark.django_db
def test_import_without_a_backend_still_checks_structure():
    graph = captured("txt2img")
    graph["5"]["class_type"] = "EmptySD3LatentImage"  # unknown only to a backend
    assert template_import(name="Ok", slug="ok", graph=graph).kind == "txt2img"
    with pytest.raises(ValidationError) as caught:
        template_import(name="Ok again", slug="ok", graph={"nodes": [], "links": []})
    assert set(caught.value.message_dict) == {"slug", "graph"}


@pytest.mark.django_db
def test_import_against_an_unreachable_backend_says_so():
    from tests.conftest import free_port

    backend = ComfyBackend.objects.create(name="gone", base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ValidationError) as caught:
        template_import(name="X", slug="x", graph=captured("txt2img"), backend=backend)
    assert "gone" in caught.value.message_dict["backend"][0]


# --- parameters -------------------------------------------------------------------


@pytest.mark.django_db
def test_parameters_of_the_builtin_templates(settings):
    ensure_builtin_templates(WorkflowTemplate)
    txt = {p["name"]: p for p in template_parameters(WorkflowTemplate.objects.get(slug="txt2img-basic"))}
    assert set(txt) == set(TXT2IMG_BINDINGS)
    # A shipped template sets no default of its own: the checkpoint's apply (request →
    # template input default → checkpoint default → studio default).
    assert txt["width"] == {
        "name": "width", "node": "5", "input": "width", "required": False, "type": "integer", "default": None,
        "min": settings.EASEL_MIN_SIZE, "max": settings.EASEL_MAX_SIZE, "step": 8,
    }
    assert txt["cfg"]["type"] == "float" and txt["cfg"]["step"] == 0.1 and txt["cfg"]["default"] is None
    assert txt["steps"]["min"] == 1 and txt["steps"]["max"] == settings.EASEL_MAX_STEPS
    assert "dpmpp_2m" in txt["sampler"]["choices"] and txt["sampler"]["default"] is None
    assert "karras" in txt["scheduler"]["choices"]
    assert txt["checkpoint"]["type"] == "checkpoint" and "choices" not in txt["checkpoint"]
    assert txt["prompt"]["type"] == "string" and txt["prompt"]["multiline"]
    img = {p["name"]: p for p in template_parameters(WorkflowTemplate.objects.get(slug="img2img-basic"))}
    assert img["image"]["required"] and img["image"]["type"] == "image"
    assert img["denoise"] == {
        "name": "denoise", "node": "3", "input": "denoise", "required": False, "type": "float", "default": None,
        "min": 0.0, "max": 1.0, "step": 0.01,
    }
    assert "width" not in img


@pytest.mark.django_db
def test_parameters_take_ranges_from_a_backends_object_info(engine_info):
    ensure_builtin_templates(WorkflowTemplate)
    info = copy.deepcopy(engine_info)
    info["KSampler"]["input"]["required"]["steps"][1]["max"] = 50
    info["KSampler"]["input"]["required"]["sampler_name"][0] = ["euler", "lcm", "my_custom_sampler"]
    template = WorkflowTemplate.objects.get(slug="txt2img-basic")
    # The admin's "validate" action stores what the backend says of each input.
    assert template_specs_refresh(template=template, object_info=info) >= 2
    params = {p["name"]: p for p in template_parameters(WorkflowTemplate.objects.get(slug="txt2img-basic"))}
    assert params["steps"]["max"] == 50
    # Only what the backend has and the studio accepts.
    assert params["sampler"]["choices"] == ["euler", "lcm"]


# --- built-in templates -----------------------------------------------------------


@pytest.mark.django_db
def test_builtin_templates_are_idempotent_and_keep_staff_choices():
    ensure_builtin_templates(WorkflowTemplate)
    img = WorkflowTemplate.objects.get(slug="img2img-basic")
    assert img.kind == "img2img" and img.is_default and img.builtin and img.bindings == IMG2IMG_BINDINGS
    assert img.graph["4"]["inputs"]["ckpt_name"] == "demo-sd15.safetensors"
    assert img.graph["9"]["inputs"]["filename_prefix"] == "easel"
    WorkflowTemplate.objects.filter(slug="img2img-basic").update(enabled=False, name="Renamed")
    TemplateInput.objects.filter(template=img).update(node_id="7", label="Staff's words")
    ensure_builtin_templates(WorkflowTemplate)
    assert WorkflowTemplate.objects.filter(builtin=True).count() == 6
    img.refresh_from_db()
    assert not img.enabled and img.name == "Renamed"
    assert img.bindings == IMG2IMG_BINDINGS  # shipped content is refreshed
    assert set(img.inputs.values_list("label", flat=True)) == {"Staff's words"}  # staff's words are kept


def _png() -> io.BytesIO:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, format="PNG")
    buf.seek(0)
    return buf


@pytest.mark.django_db
def test_builtin_templates_render_and_are_accepted_by_the_demo_engine(demo_engine):
    ensure_builtin_templates(WorkflowTemplate)
    client = ComfyClient(demo_engine.url)
    common = {
        "checkpoint": "demo-sd15.safetensors", "prompt": "a lighthouse", "negative_prompt": "fog", "seed": 7,
        "steps": 2, "cfg": 6.5, "sampler": "euler", "scheduler": "karras",
    }
    txt = WorkflowTemplate.objects.get(slug="txt2img-basic")
    prompt = render_workflow(txt.graph, txt.bindings, {**common, "width": 64, "height": 64, "batch_size": 1})
    body = client.submit(prompt=prompt, prompt_id=str(uuid.uuid4()), client_id="test")
    assert body["node_errors"] == {}

    uploaded = client.upload_image(name="source.png", fileobj=_png())
    img = WorkflowTemplate.objects.get(slug="img2img-basic")
    prompt = render_workflow(img.graph, img.bindings, {**common, "image": uploaded["name"], "denoise": 0.5})
    assert prompt["1"]["inputs"]["image"] == uploaded["name"] and prompt["3"]["inputs"]["denoise"] == 0.5
    body = client.submit(prompt=prompt, prompt_id=str(uuid.uuid4()), client_id="test")
    assert body["node_errors"] == {}


# --- admin ------------------------------------------------------------------------


def _upload(graph, name="workflow_api.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, json.dumps(graph).encode(), content_type="application/json")


def test_admin_import_creates_the_template(staff_client):
    url = reverse("admin:models_catalog_workflowtemplate_import")
    assert staff_client.get(reverse("admin:models_catalog_workflowtemplate_changelist")).content.count(
        url.encode()
    ) == 1
    assert staff_client.get(url).status_code == 200
    response = staff_client.post(url, {"name": "Portrait", "slug": "portrait", "workflow": _upload(captured("txt2img"))})
    template = WorkflowTemplate.objects.get(slug="portrait")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:models_catalog_workflowtemplate_change", args=[template.pk])
    assert template.bindings == TXT2IMG_BINDINGS and template.kind == "txt2img"
    page = staff_client.get(response["Location"]).content.decode()
    assert "detected inputs" in page.lower() and "ckpt_name" in page
    # An imported template's own values are the defaults its tasks get.
    defaults = dict(template.inputs.values_list("name", "default"))
    assert defaults["cfg"] == captured("txt2img")["3"]["inputs"]["cfg"] and defaults["negative_prompt"] == captured("txt2img")["7"]["inputs"]["text"]
    assert defaults["seed"] is None and defaults["prompt"] is None


def test_admin_import_shows_errors_per_node(staff_client, demo_engine):
    backend = ComfyBackend.objects.create(name="demo", base_url=demo_engine.url)
    graph = captured("txt2img")
    graph["6"]["inputs"]["colour"] = "red"
    graph["10"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    url = reverse("admin:models_catalog_workflowtemplate_import")
    response = staff_client.post(
        url, {"name": "Bad", "slug": "bad", "workflow": _upload(graph), "backend": backend.pk}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="node-errors"' in page
    assert "FancyUpscaler" in page and "colour" in page and "CLIPTextEncode" in page
    assert not WorkflowTemplate.objects.filter(slug="bad").exists()


def test_admin_import_explains_ui_format_and_bad_json(staff_client):
    url = reverse("admin:models_catalog_workflowtemplate_import")
    ui = {"nodes": [{"id": 1}], "links": []}
    page = staff_client.post(url, {"name": "UI", "slug": "ui", "workflow": _upload(ui)}).content.decode()
    assert "Export (API)" in page
    bad = SimpleUploadedFile("w.json", b"{not json", content_type="application/json")
    page = staff_client.post(url, {"name": "UI", "slug": "ui", "workflow": bad}).content.decode()
    assert "not valid JSON" in page
    assert not WorkflowTemplate.objects.filter(slug="ui").exists()


def _change_data(template, **changes) -> dict:
    """The admin change form's POST for a template and its inputs; `changes` maps an
    input name to the fields to change in its row."""
    data = {
        "name": template.name, "slug": template.slug, "kind": template.kind, "description": "",
        "enabled": "on", "is_default": "on", "execution_timeout": "", "graph": json.dumps(template.graph),
    }
    rows = list(template.inputs.all())
    data.update({"inputs-TOTAL_FORMS": len(rows), "inputs-INITIAL_FORMS": len(rows), "inputs-MIN_NUM_FORMS": 0,
                 "inputs-MAX_NUM_FORMS": 1000})
    for i, row in enumerate(rows):
        values = {"id": row.pk, "template": template.pk, "name": row.name, "node_id": row.node_id,
                  "input_name": row.input_name, "label": row.label, "help_text": row.help_text, "group": row.group,
                  "default": "" if row.default is None else json.dumps(row.default), "order": row.order,
                  "minimum": row.minimum or "", "maximum": row.maximum or "", "step": row.step or ""}
        values.update(changes.get(row.name, {}))
        data.update({f"inputs-{i}-{key}": value for key, value in values.items()})
        if row.optional:
            data[f"inputs-{i}-optional"] = "on"
    return data


def test_admin_change_form_refuses_broken_inputs(staff_client):
    ensure_builtin_templates(WorkflowTemplate)
    template = WorkflowTemplate.objects.get(slug="txt2img-basic")
    url = reverse("admin:models_catalog_workflowtemplate_change", args=[template.pk])
    response = staff_client.post(url, _change_data(template, prompt={"node_id": "3", "input_name": "model"}))
    assert response.status_code == 200 and "is a link" in response.content.decode()
    # Staff may narrow ComfyUI's limits, never widen them.
    response = staff_client.post(url, _change_data(template, steps={"maximum": 20000}))
    assert response.status_code == 200 and "cannot be above" in response.content.decode()
    response = staff_client.post(url, _change_data(template, steps={"maximum": 30, "default": "12"},
                                                   prompt={"node_id": "7"}, negative_prompt={"node_id": "6"}))
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.bindings["prompt"] == ["7", "text"]
    steps = template.inputs.get(name="steps")
    assert steps.maximum == 30 and steps.default == 12


def test_admin_validate_action_reports_per_node(staff_client, demo_engine):
    ComfyBackend.objects.create(name="demo", base_url=demo_engine.url, is_online=True)
    ensure_builtin_templates(WorkflowTemplate)
    graph = captured("txt2img")
    graph["5"]["class_type"] = "EmptySD3LatentImage"
    broken = WorkflowTemplate.objects.create(slug="broken", name="Broken", graph=graph)
    template_inputs_create(template=broken, rows=rows_from_bindings(TXT2IMG_BINDINGS))
    good = WorkflowTemplate.objects.get(slug="txt2img-basic")
    response = staff_client.post(
        reverse("admin:models_catalog_workflowtemplate_changelist"),
        {"action": "validate_against_backend", "_selected_action": [broken.pk, good.pk]},
        follow=True,
    )
    texts = [str(m) for m in response.context["messages"]]
    assert any("Broken" in t and "Node 5 (EmptySD3LatentImage)" in t for t in texts), texts
    assert any(t.startswith("Text to image: valid (demo)") for t in texts), texts


# --- API --------------------------------------------------------------------------


@pytest.mark.django_db
def test_templates_api_lists_enabled_templates_with_parameters(client, make_user, api_client_for):
    ensure_builtin_templates(WorkflowTemplate)
    WorkflowTemplate.objects.create(slug="off", name="Off", graph=captured("txt2img"), enabled=False)
    url = "/api/v1/templates"
    assert client.get(url).status_code in (401, 403)
    response = api_client_for(make_user()).get(url)
    assert response.status_code == 200
    by_slug = {t["slug"]: t for t in response.json()["results"]}
    assert set(by_slug) == {"txt2img-basic", "img2img-basic", "txt2img-loras", "hires-fix", "upscale", "inpaint"}
    img = by_slug["img2img-basic"]
    assert img["kind"] == "img2img" and img["is_default"] is True and img["description"]
    names = [p["name"] for p in img["parameters"]]
    assert "image" in names and "denoise" in names and "width" not in names
    txt_names = [p["name"] for p in by_slug["txt2img-basic"]["parameters"]]
    assert txt_names[:3] == ["checkpoint", "prompt", "negative_prompt"] and "denoise" not in txt_names


@pytest.mark.django_db
def test_templates_api_reads_a_fixed_number_of_queries(make_user, django_assert_max_num_queries):
    from rest_framework.test import APIClient

    ensure_builtin_templates(WorkflowTemplate)
    api = APIClient()
    api.force_authenticate(make_user())
    # Templates, their inputs, then each kind of file the inputs list (checkpoints, LoRAs,
    # upscale models) once: not once per template.
    with django_assert_max_num_queries(5):
        assert api.get("/api/v1/templates").status_code == 200
    for n in range(6):
        copy_ = WorkflowTemplate.objects.create(slug=f"copy-{n}", name="Copy", graph=captured("txt2img"))
        template_inputs_create(template=copy_, rows=rows_from_bindings(TXT2IMG_BINDINGS))
    with django_assert_max_num_queries(5):
        assert api.get("/api/v1/templates").status_code == 200
