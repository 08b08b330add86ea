"""LoRAs, VAEs, upscale models and ControlNets in the catalog: which ComfyUI inputs name
them, the sync from the demo engine on a real port, routing by every file a task needs,
and the admin pages in English and Chinese."""
from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages

from generation.demo_engine.options import DEFAULT_LORAS, DEFAULT_UPSCALE_MODELS, DEFAULT_VAES
from models_catalog import files
from models_catalog.builtin import DEMO_FILE_DESCRIPTION
from models_catalog.models import Checkpoint, ComfyBackend, ModelFile
from models_catalog.selectors import backends_having, model_file_get_usable, model_files_usable
from models_catalog.services import backend_ensure, catalog_sync, checkpoints_sync, model_files_sync
from tests.conftest import COMFYUI_CAPTURES, free_port

pytestmark = pytest.mark.django_db

FILES_URL = "/admin/models_catalog/modelfile/"


def names(kind: str, backend: ComfyBackend | None = None) -> set[str]:
    qs = ModelFile.objects.filter(kind=kind)
    if backend is not None:
        qs = qs.filter(backends=backend)
    return set(qs.values_list("file_name", flat=True))


# --- the rule: which inputs name server files ---------------------------------------------------


@pytest.fixture(scope="module")
def object_info() -> dict:
    return json.loads((COMFYUI_CAPTURES / "object_info.json").read_text())


def test_every_listed_loader_input_exists_in_the_real_object_info(object_info):
    for (class_type, input_name), kind in files.FILE_INPUTS.items():
        inputs = object_info[class_type]["input"]
        spec = {**inputs.get("required", {}), **inputs.get("optional", {})}[input_name]
        assert files.combo_choices(spec) is not None, (class_type, input_name)
        assert files.file_kind(class_type, input_name) == kind
    for kind, (class_type, input_name) in files.LISTINGS.items():
        assert files.FILE_INPUTS[(class_type, input_name)] == kind


def test_the_kind_of_each_file_input_of_comfyui(object_info):
    assert files.file_kind("CheckpointLoaderSimple", "ckpt_name") == "checkpoint"
    assert files.file_kind("unCLIPCheckpointLoader", "ckpt_name") == "checkpoint"
    assert files.file_kind("SomeCustomLoader", "ckpt_name") == "checkpoint"
    assert files.file_kind("LoraLoader", "lora_name") == "lora"
    assert files.file_kind("LoraLoaderModelOnly", "lora_name") == "lora"
    assert files.file_kind("VAELoader", "vae_name") == "vae"
    assert files.file_kind("UpscaleModelLoader", "model_name") == "upscale_model"
    assert files.file_kind("ControlNetLoader", "control_net_name") == "controlnet"
    # Not files: a prompt, a sampler name, an API node's remote model.
    assert files.file_kind("CLIPTextEncode", "text") is None
    assert files.file_kind("KSampler", "sampler_name") is None
    assert files.file_kind("KlingImageGenerationNode", "model_name") is None
    # Every combo input of the capture that the rule calls a file is one of a loader.
    kinds = {}
    for class_type, info in object_info.items():
        for section in ("required", "optional"):
            for input_name, spec in (info.get("input", {}).get(section) or {}).items():
                kind = files.file_kind(class_type, input_name)
                if kind:
                    assert files.combo_choices(spec) is not None, (class_type, input_name)
                    kinds.setdefault(kind, set()).add(class_type)
    assert {"CheckpointLoaderSimple", "CheckpointLoader"} <= kinds["checkpoint"]
    assert kinds["lora"] == {"LoraLoader", "LoraLoaderModelOnly", "CreateHookLora", "CreateHookLoraModelOnly"}
    assert kinds["vae"] == {"VAELoader"} and kinds["upscale_model"] == {"UpscaleModelLoader"}
    assert kinds["controlnet"] == {"ControlNetLoader", "DiffControlNetLoader"}


def test_lists_are_read_from_the_capture_in_both_combo_shapes(object_info):
    assert files.listing(object_info, "checkpoint") == ["random-sd15-b.safetensors", "random-sd15.safetensors"]
    assert files.listing(object_info, "vae") == []  # only "pixel_space", which is no file
    assert files.listing(object_info, "upscale_model") == []  # the COMBO form, empty on that server
    assert files.listing({}, "lora") == []  # no loader node: no such file
    assert files.listing({"LoraLoader": {"input": {"required": {"lora_name": ["STRING", {}]}}}}, "lora") is None


def test_the_files_a_graph_loads():
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "y.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "x.safetensors", "model": ["4", 0]}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat"}},
    }
    assert files.graph_files(graph) == {"checkpoint": {"y.safetensors"}, "lora": {"x.safetensors"}}


# --- the sync from the demo engine ----------------------------------------------------------------


def test_first_start_enables_every_file_with_a_readable_name(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url, is_demo=True)
    summary = catalog_sync(backends=[backend])
    assert not summary.errors
    assert sorted(summary.checkpoints.added) == ["demo-sd15.safetensors", "demo-sdxl.safetensors"]
    assert names("lora", backend) == set(DEFAULT_LORAS)
    assert names("vae", backend) == set(DEFAULT_VAES)  # without VAELoader's "pixel_space"
    assert names("upscale_model", backend) == set(DEFAULT_UPSCALE_MODELS)
    assert names("controlnet") == set()  # the demo engine has no ControlNetLoader
    assert not ModelFile.objects.filter(enabled=False).exists()
    ink = ModelFile.objects.get(kind="lora", file_name="demo-lora-ink.safetensors")
    assert ink.shown_name == "demo-lora-ink" and ink.description == DEMO_FILE_DESCRIPTION
    assert "added 4" in str(summary) and "lora:" in str(summary)
    # Usable: enabled and on an enabled backend.
    assert set(model_files_usable(kind="lora").values_list("file_name", flat=True)) == set(DEFAULT_LORAS)
    assert model_file_get_usable(kind="vae", file_name="demo-vae.safetensors").online
    ComfyBackend.objects.filter(pk=backend.pk).update(enabled=False)
    assert not model_files_usable(kind="lora").exists()


def test_a_file_that_appears_later_waits_for_staff_and_availability_is_replaced(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    model_files_sync(backends=[backend])
    assert not Checkpoint.objects.exists()  # files only
    demo_engine.stop()
    demo_engine.start("--loras", "demo-lora-ink.safetensors,styles/new-lora.safetensors", "--vaes", "")
    summary = model_files_sync(backends=[backend])
    assert summary.files["lora"].added == ["styles/new-lora.safetensors"]
    assert "demo-lora-neon.safetensors" in summary.files["lora"].no_longer_available
    new = ModelFile.objects.get(kind="lora", file_name="styles/new-lora.safetensors")
    assert not new.enabled and new.shown_name == "new-lora" and new.description == ""
    assert names("lora", backend) == {"demo-lora-ink.safetensors", "styles/new-lora.safetensors"}
    assert names("vae", backend) == set()
    # The rows stay (staff's names and descriptions survive); only availability changed.
    assert names("lora") >= set(DEFAULT_LORAS) and names("vae") == set(DEFAULT_VAES)
    usable = set(model_files_usable(kind="lora").values_list("file_name", flat=True))
    assert usable == {"demo-lora-ink.safetensors"}  # the new one is disabled, the others gone
    assert model_file_get_usable(kind="lora", file_name="styles/new-lora.safetensors") is None


def test_an_unreachable_backend_keeps_its_list(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    catalog_sync(backends=[backend])
    dead = ComfyBackend.objects.create(name="dead", base_url=f"http://127.0.0.1:{free_port()}")
    dead.model_files.set(ModelFile.objects.filter(kind="lora", file_name="demo-lora-ink.safetensors"))
    demo_engine.stop()
    summary = catalog_sync(backends=[backend, dead])
    assert set(summary.errors) == {"demo", "dead"} and "errors: " in str(summary)
    assert names("lora", backend) == set(DEFAULT_LORAS)
    assert names("lora", dead) == {"demo-lora-ink.safetensors"}
    backend.refresh_from_db()
    assert not backend.is_online


@pytest.fixture
def asked(monkeypatch):
    """The paths the ComfyUI client requests (a witness: the real request still goes out)."""
    from generation.comfy import ComfyClient

    paths = []
    real = ComfyClient._request

    def spy(self, method, path, **kwargs):
        paths.append(path)
        return real(self, method, path, **kwargs)

    monkeypatch.setattr(ComfyClient, "_request", spy)
    return paths


LOADER_PATHS = ["/object_info/CheckpointLoaderSimple", "/object_info/LoraLoader", "/object_info/VAELoader",
                "/object_info/UpscaleModelLoader", "/object_info/ControlNetLoader"]


def test_the_sync_reads_only_the_loader_classes_never_the_full_object_info(demo_engine, make_engine, asked):
    backends = [backend_ensure(name="one", base_url=demo_engine.url),
                backend_ensure(name="two", base_url=make_engine().url)]
    asked.clear()
    summary = catalog_sync(backends=backends)
    # One small request per listing and backend; the ~830 KB /object_info is never read.
    assert asked == LOADER_PATHS * 2
    assert not summary.errors
    asked.clear()
    model_files_sync(backends=backends[:1])
    assert asked == LOADER_PATHS[1:]  # files only: no checkpoint list asked


def test_a_class_the_backend_does_not_answer_keeps_that_kinds_list(demo_engine, asked, monkeypatch):
    from generation.comfy import ComfyClient, ComfyProtocolError

    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    catalog_sync(backends=[backend])
    demo_engine.stop()
    demo_engine.start("--loras", "", "--vaes", "")
    real = ComfyClient.object_info

    def lora_fails(self, node_class=None):
        if node_class == "LoraLoader":
            raise ComfyProtocolError("GET /object_info/LoraLoader: HTTP 500", status=500)
        return real(self, node_class)

    monkeypatch.setattr(ComfyClient, "object_info", lora_fails)
    summary = catalog_sync(backends=[backend])
    assert "lora" in summary.errors["demo"] and "HTTP 500" in summary.errors["demo"]
    assert names("lora", backend) == set(DEFAULT_LORAS)  # kept: not read this round
    assert names("vae", backend) == set()  # read: the server now has none
    backend.refresh_from_db()
    assert backend.is_online  # it answered the other classes
    monkeypatch.setattr(ComfyClient, "object_info", real)
    assert not catalog_sync(backends=[backend]).errors
    assert names("lora", backend) == set()


def test_a_backend_that_answers_no_class_is_marked_down_and_keeps_every_list(demo_engine, monkeypatch):
    from generation.comfy import ComfyClient, ComfyProtocolError

    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    catalog_sync(backends=[backend])

    def fails(self, node_class=None):
        raise ComfyProtocolError(f"GET /object_info/{node_class}: HTTP 500", status=500)

    monkeypatch.setattr(ComfyClient, "object_info", fails)
    summary = catalog_sync(backends=[backend])
    assert summary.errors == {"demo": "GET /object_info/CheckpointLoaderSimple: HTTP 500"}
    assert names("lora", backend) == set(DEFAULT_LORAS) and backend.checkpoints.count() == 2
    backend.refresh_from_db()
    assert not backend.is_online


def test_an_unreachable_backend_is_asked_once_not_once_per_class(db, asked):
    dead = ComfyBackend.objects.create(name="dead", base_url=f"http://127.0.0.1:{free_port()}")
    summary = catalog_sync(backends=[dead])
    assert set(summary.errors) == {"dead"}
    assert asked == LOADER_PATHS[:1]


def test_checkpoints_sync_alone_still_works_and_leaves_files_alone(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    summary = checkpoints_sync(backends=[backend])
    assert len(summary.added) == 2 and not ModelFile.objects.exists()


def test_the_command_syncs_files_too(demo_engine, capsys):
    from django.core.management import call_command

    backend_ensure(name="demo", base_url=demo_engine.url)
    call_command("sync_checkpoints")
    out = capsys.readouterr().out
    assert "checkpoints: added 2" in out and "lora: added 4" in out
    assert names("lora") == set(DEFAULT_LORAS)


# --- routing: every file a task needs -------------------------------------------------------------


def test_backends_having_every_file(make_engine):
    both = make_engine()
    plain = make_engine("--loras", "demo-lora-neon.safetensors")
    a = backend_ensure(name="a", base_url=both.url)
    b = backend_ensure(name="b", base_url=plain.url)
    catalog_sync(backends=[a, b])
    x, y = "demo-lora-ink.safetensors", "demo-sd15.safetensors"
    assert backends_having({}) is None
    assert backends_having({"lora": set()}) is None
    assert backends_having({"checkpoint": {y}}) == {a.pk, b.pk}
    assert backends_having({"lora": {x}}) == {a.pk}
    assert backends_having({"checkpoint": {y}, "lora": {x}}) == {a.pk}
    assert backends_having({"checkpoint": {y}, "lora": {x, "demo-lora-neon.safetensors"}}) == {a.pk}
    assert backends_having({"checkpoint": {"nowhere.safetensors"}, "lora": {x}}) == set()
    assert backends_having({"vae": {"pixel_space"}}) is None  # on every server, no constraint
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": y}},
        "10": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": x, "model": ["4", 0]}},
    }
    assert backends_having(files.graph_files(graph)) == {a.pk}


def test_backends_having_asks_once_per_kind_whatever_the_backends(db, django_assert_num_queries):
    backends = [ComfyBackend.objects.create(name=f"b{i}", base_url=f"http://b{i}:8188") for i in range(5)]
    checkpoint = Checkpoint.objects.create(name="y", ckpt_name="y.safetensors")
    checkpoint.backends.set(backends)
    lora = ModelFile.objects.create(kind="lora", file_name="x.safetensors")
    lora.backends.set(backends[:3])
    with django_assert_num_queries(2):
        having = backends_having({"checkpoint": {"y.safetensors"}, "lora": {"x.safetensors"}})
    assert having == {b.pk for b in backends[:3]}
    with django_assert_num_queries(1):  # no backend has the first kind's file: nothing more to ask
        assert backends_having({"checkpoint": {"z.safetensors"}, "lora": {"x.safetensors"}}) == set()


# --- the admin, in English and Chinese --------------------------------------------------------


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def some_files(db):
    backend = ComfyBackend.objects.create(name="gpu1", base_url="http://gpu1:8188")
    lora = ModelFile.objects.create(kind="lora", file_name="ink.safetensors", display_name="Ink",
                                    description=DEMO_FILE_DESCRIPTION)
    vae = ModelFile.objects.create(kind="vae", file_name="kl-f8.safetensors", enabled=False)
    lora.backends.add(backend)
    return {"lora": lora, "vae": vae, "backend": backend}


@pytest.mark.parametrize("language, expected", [
    ("en", ["Model files", "Ink", "ink.safetensors", "kl-f8", "LoRA", "VAE", "Enable", "Disable",
            "Sync from backends"]),
    ("zh-Hans", ["附加模型文件", "Ink", "ink.safetensors", "启用", "停用", "从后端同步"]),
])
def test_the_changelist_renders(staff_client, some_files, language, expected):
    page = staff_client.get(FILES_URL, HTTP_ACCEPT_LANGUAGE=language)
    assert page.status_code == 200
    body = page.content.decode()
    missing = [text for text in expected if text not in body]
    assert not missing, missing
    filtered = staff_client.get(FILES_URL, {"kind": "lora", "backends__id__exact": some_files["backend"].pk})
    assert "ink.safetensors" in filtered.content.decode() and "kl-f8" not in filtered.content.decode()


@pytest.mark.parametrize("language, expected", [
    ("en", ["ComfyUI file name", "display name", "available on", "Built-in demo engine"]),
    ("zh-Hans", ["ComfyUI 文件名", "可用后端", "LoRA"]),
])
def test_the_change_page_renders(staff_client, some_files, language, expected):
    page = staff_client.get(f"{FILES_URL}{some_files['lora'].pk}/change/", HTTP_ACCEPT_LANGUAGE=language)
    assert page.status_code == 200
    body = page.content.decode()
    missing = [text for text in expected if text.lower() not in body.lower()]
    assert not missing, missing


def test_shown_description_is_translated(some_files):
    from django.utils import translation

    lora, vae = some_files["lora"], some_files["vae"]
    with translation.override("zh-hans"):
        assert lora.shown_description == "内置演示引擎：仅供试用模板的名称，没有权重，并非 AI。"
        assert lora.get_kind_display() == "LoRA" and vae.shown_name == "kl-f8.safetensors"
    with translation.override("en"):
        assert lora.shown_description == DEMO_FILE_DESCRIPTION
    ModelFile.objects.filter(pk=lora.pk).update(description="Staff's own words")
    lora.refresh_from_db()
    with translation.override("zh-hans"):
        assert lora.shown_description == "Staff's own words"


def test_staff_enable_and_disable(staff_client, some_files):
    lora, vae = some_files["lora"], some_files["vae"]
    staff_client.post(FILES_URL, {"action": "disable", "_selected_action": [lora.pk]})
    staff_client.post(FILES_URL, {"action": "enable", "_selected_action": [vae.pk]})
    lora.refresh_from_db()
    vae.refresh_from_db()
    assert not lora.enabled and vae.enabled


def test_the_sync_action_reports_files(staff_client, demo_engine, some_files):
    ComfyBackend.objects.all().delete()
    ComfyBackend.objects.create(name="demo", base_url=demo_engine.url, is_demo=True)
    response = staff_client.post(FILES_URL, {"action": "sync_from_backends",
                                             "_selected_action": [some_files["vae"].pk]})
    message = str(list(get_messages(response.wsgi_request))[-1])
    assert message.startswith("Checkpoints added: ")
    assert "LoRA files added: demo-lora-ink.safetensors" in message
    # The catalog already held a LoRA and a VAE: the new ones wait for staff.
    assert "New model files are offered to users once you enable them." in message
    assert not ModelFile.objects.get(kind="lora", file_name="demo-lora-neon.safetensors").enabled
    assert ModelFile.objects.get(kind="upscale_model").enabled  # the first of its kind


def test_dispatch_sends_a_task_only_where_its_templates_files_are(catalog, make_user):
    """A template that loads LoRA x with the task's checkpoint y runs only where both are."""
    import copy

    from generation.fleet.dispatch import dispatch
    from generation.services import generation_create
    from models_catalog.builtin import TXT2IMG_BINDINGS, txt2img_graph
    from models_catalog.models import WorkflowTemplate
    from models_catalog.templates import rows_from_bindings, template_inputs_create

    ComfyBackend.objects.all().delete()
    a = ComfyBackend.objects.create(name="a", base_url="http://a.invalid", is_online=True, max_in_flight=5)
    b = ComfyBackend.objects.create(name="b", base_url="http://b.invalid", is_online=True, max_in_flight=5)
    y = Checkpoint.objects.create(name="y", ckpt_name="y.safetensors")
    y.backends.add(a, b)
    x = ModelFile.objects.create(kind="lora", file_name="x.safetensors")
    x.backends.add(b)
    graph = copy.deepcopy(txt2img_graph())
    graph["10"] = {"class_type": "LoraLoader", "inputs": {
        "lora_name": "x.safetensors", "strength_model": 1.0, "strength_clip": 1.0, "model": ["4", 0], "clip": ["4", 1]}}
    graph["3"]["inputs"]["model"] = ["10", 0]
    with_x_template = WorkflowTemplate.objects.create(slug="with-x", name="With x", graph=graph)
    template_inputs_create(template=with_x_template, rows=rows_from_bindings(TXT2IMG_BINDINGS))
    user = make_user(max_concurrent_tasks=10)

    def create(**extra):
        return generation_create(user=user, prompt="p", model_name="y", width=64, height=64, **extra)

    with_x = [create(template="with-x") for _ in range(3)]
    plain = [create() for _ in range(2)]
    dispatch(probe=False)
    assert [backend_of(t) for t in with_x] == [b.pk] * 3
    assert {backend_of(t) for t in plain} == {a.pk}  # the idle one, which also has y
    # Once b no longer has x, a new task with that template waits.
    x.backends.clear()
    waiting = create(template="with-x")
    dispatch(probe=False)
    assert backend_of(waiting) is None


def backend_of(task) -> int | None:
    task.refresh_from_db()
    return task.backend_id
