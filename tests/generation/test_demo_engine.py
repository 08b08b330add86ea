"""The demo engine against the real ComfyUI 0.3.64 captures in ``tests/fixtures/comfyui``.

The engine runs as a real subprocess (``python -m generation.demo_engine --port 0``); the tests talk to it with
``requests`` and ``websocket-client`` like any ComfyUI client would, and compare status codes, key sets, message
sequences and binary frame layouts with what the real server produced. No Django and no database are involved.
"""

from __future__ import annotations

import copy
import io
import json
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import websocket
from PIL import Image

from tests.conftest import COMFYUI_CAPTURES

REPO = Path(__file__).resolve().parents[2]
DEMO_CKPTS = ["demo-sd15.safetensors", "demo-sdxl.safetensors"]
CAPTURE_CKPTS = ["random-sd15-b.safetensors", "random-sd15.safetensors"]
STEP_DELAY = 0.02


CAPTURES = COMFYUI_CAPTURES


def cap(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


def cap_trace(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / name).read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _fast_hasher() -> None:
    """Shadows the suite-wide autouse fixture of the same name, which needs pytest-django's ``settings``.

    These tests never touch Django, so they also run with ``-p no:django`` (and without ``config.settings``).
    """


# --- engine process ---------------------------------------------------------------------------------------------

class EngineProcess:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.output_dir, self.input_dir = tmp / "output", tmp / "input"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generation.demo_engine", "--port", "0", "--step-delay", str(STEP_DELAY),
             "--node-delay", "0.002", "--output-dir", str(self.output_dir), "--input-dir", str(self.input_dir),
             *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if "demo engine listening on http://" not in line:
            self.stop()
            raise RuntimeError(f"engine did not start: {line!r} {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.base = line.strip().rsplit(" ", 1)[-1]
        self.ws_base = self.base.replace("http://", "ws://")

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url(path), timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url(path), timeout=10, **kw)

    def faults(self, **values: Any) -> dict[str, Any]:
        response = self.post("/demo/faults", json=values)
        assert response.status_code == 200, response.text
        return response.json()

    def connect(self, client_id: str | None = None, feature_flags: bool = False) -> websocket.WebSocket:
        query = f"?clientId={client_id}" if client_id else ""
        ws = websocket.create_connection(f"{self.ws_base}/ws{query}", timeout=10)
        if feature_flags:
            ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        return ws

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = EngineProcess(tmp_path_factory.mktemp("demo-engine"))
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

def txt2img(**inputs: Any) -> dict[str, Any]:
    """The captured txt2img workflow with the demo checkpoint; KSampler inputs overridable."""
    prompt = cap("workflow_txt2img_api.json")
    prompt["4"]["inputs"]["ckpt_name"] = DEMO_CKPTS[0]
    for key in ("width", "height", "batch_size"):
        if key in inputs:
            prompt["5"]["inputs"][key] = inputs.pop(key)
    if "text" in inputs:
        prompt["6"]["inputs"]["text"] = inputs.pop("text")
    prompt["3"]["inputs"].update(inputs)
    return prompt


def img2img(image: str) -> dict[str, Any]:
    prompt = cap("workflow_img2img_api.json")
    prompt["4"]["inputs"]["ckpt_name"] = DEMO_CKPTS[0]
    prompt["1"]["inputs"]["image"] = image
    return prompt


Frame = tuple[str, Any]  # ("text", message dict) or ("binary", bytes)


def recv(ws: websocket.WebSocket) -> Frame:
    opcode, data = ws.recv_data()
    if opcode == websocket.ABNF.OPCODE_BINARY:
        return ("binary", data)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        return ("close", data)
    return ("text", json.loads(data))


def collect_until_done(ws: websocket.WebSocket, prompt_id: str, frames: list[Frame] | None = None,
                       on_frame: Callable[[Frame], None] | None = None) -> list[Frame]:
    """Record frames until ``executing`` with ``node: null`` for ``prompt_id`` (ComfyUI's end marker)."""
    frames = [] if frames is None else frames
    deadline = time.time() + 20
    while time.time() < deadline:
        frame = recv(ws)
        frames.append(frame)
        if on_frame:
            on_frame(frame)
        if frame[0] == "text" and frame[1]["type"] == "executing" and frame[1]["data"].get("node") is None \
                and frame[1]["data"].get("prompt_id") == prompt_id:
            return frames
    raise AssertionError("prompt did not finish")


def types(frames: list[Frame]) -> list[str]:
    out = []
    for kind, data in frames:
        if kind == "binary":
            out.append(f"binary:{int.from_bytes(data[:4], 'big')}")
        elif kind == "text":
            out.append(data["type"])
    return out


def messages(frames: list[Frame], kind: str, prompt_id: str | None = None) -> list[dict[str, Any]]:
    return [data["data"] for k, data in frames if k == "text" and data["type"] == kind
            and (prompt_id is None or data["data"].get("prompt_id") == prompt_id)]


def capture_types(trace: list[dict[str, Any]]) -> list[str]:
    return [f"binary:{r['data']['event_type']}" if r["kind"] == "binary" else r["data"]["type"] for r in trace]


def run(engine: EngineProcess, prompt: dict[str, Any], feature_flags: bool = False, **body: Any
        ) -> tuple[str, list[Frame]]:
    client_id = uuid.uuid4().hex
    ws = engine.connect(client_id, feature_flags)
    try:
        frames = [recv(ws)]
        if feature_flags:
            frames.append(recv(ws))
        response = engine.post("/prompt", json={"prompt": prompt, "client_id": client_id, **body})
        assert response.status_code == 200, response.text
        prompt_id = response.json()["prompt_id"]
        return prompt_id, collect_until_done(ws, prompt_id, frames)
    finally:
        ws.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached")


def assert_same_keys(actual: Any, expected: Any, path: str = "$") -> None:
    """Recursively: the same dict keys and the same container kinds (values are not compared)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {type(actual).__name__}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same_keys(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {type(actual).__name__}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            if isinstance(e, (dict, list)):
                assert_same_keys(a, e, f"{path}[{index}]")


def demo_names(value: Any) -> Any:
    """Swap the capture's checkpoint names for the demo engine's, everywhere in a captured body."""
    if isinstance(value, dict):
        return {k: demo_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(DEMO_CKPTS) if value == CAPTURE_CKPTS else [demo_names(v) for v in value]
    if isinstance(value, str):
        return value.replace(str(CAPTURE_CKPTS), str(DEMO_CKPTS))
    return value


def history_entry(engine: EngineProcess, prompt_id: str) -> dict[str, Any]:
    return wait_for(lambda: engine.get(f"/history/{prompt_id}").json().get(prompt_id))


def upload(engine: EngineProcess, name: str, data: bytes, **fields: str) -> requests.Response:
    return engine.post("/upload/image", files={"image": (name, data, "image/png")}, data=fields)


def png_bytes(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def first_history(name: str) -> dict[str, Any]:
    data = cap(name)
    return next(iter(data.values()))


# --- plain endpoints --------------------------------------------------------------------------------------------

def test_info_endpoints_match_captures(engine: EngineProcess) -> None:
    stats = engine.get("/system_stats")
    assert stats.status_code == 200
    assert_same_keys(stats.json(), cap("system_stats.json"))
    device = stats.json()["devices"][0]
    assert "Easel demo engine" in device["name"] and device["type"] == "cpu"

    assert engine.get("/features").json() == cap("features.json")
    assert engine.get("/models").json() == cap("models_list.json")
    assert engine.get("/models/checkpoints").json() == DEMO_CKPTS
    missing = engine.get("/models/not_a_folder")
    assert missing.status_code == 404 and missing.content == b""
    assert engine.get("/embeddings").json() == cap("embeddings.json")
    assert engine.get("/prompt").json() == cap("prompt_get.json")
    assert engine.get("/queue").json() == cap("queue_empty.json")
    assert engine.get("/history/no-such-id").json() == {}
    for path in cap("capture_meta_basic.json")["api_prefix"]:
        assert engine.get(path).status_code == 200, path


def test_object_info_matches_capture(engine: EngineProcess) -> None:
    core = cap("object_info_core.json")
    full = cap("object_info.json")  # the classes beyond the core capture (tools: LoRAs, upscaling, inpainting)
    info = engine.get("/object_info").json()
    expected_nodes = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
                      "VAEEncode", "LoadImage", "SaveImage", "PreviewImage",
                      "LoraLoader", "LoraLoaderModelOnly", "VAELoader", "LatentUpscale", "LatentUpscaleBy",
                      "UpscaleModelLoader", "ImageUpscaleWithModel", "ImageScale", "ImageScaleBy",
                      "VAEEncodeForInpaint", "SetLatentNoiseMask", "LoadImageMask", "ImageToMask", "InvertMask",
                      "GrowMask"}
    assert set(info) == expected_nodes
    for name in expected_nodes:
        assert_same_keys(info[name], core[name] if name in core else full[name], name)
    # Copied verbatim, apart from the server-specific combo lists.
    assert engine.get("/object_info/KSampler").json() == {"KSampler": core["KSampler"]}
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == DEMO_CKPTS
    unknown = engine.get("/object_info/NoSuchNode")
    assert unknown.status_code == 200 and unknown.json() == {}


def test_each_loader_class_answers_alone_as_comfyui_does(engine: EngineProcess) -> None:
    """What the catalog sync reads (models_catalog.files.LISTINGS, one class per request):
    `{Class: entry}`, the same entry as in the full list, with the capture's shape; a class the
    server lacks (the demo engine has no ControlNetLoader) is 200 `{}`, under /api too."""
    from models_catalog.files import LISTINGS

    full = cap("object_info.json")
    info = engine.get("/object_info").json()
    for class_type, _input in LISTINGS.values():
        for prefix in ("", "/api"):
            answer = engine.get(f"{prefix}/object_info/{class_type}")
            assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
            if class_type in info:
                assert answer.json() == {class_type: info[class_type]}, class_type
                assert_same_keys(info[class_type], full[class_type], class_type)
            else:
                assert class_type == "ControlNetLoader" and answer.json() == {}
    for unknown in ("NoSuchNode", "loraloader", "LoraLoader%20"):
        answer = engine.get(f"/object_info/{unknown}")
        assert answer.status_code == 200 and answer.json() == {}, unknown


# --- POST /prompt -----------------------------------------------------------------------------------------------

def test_post_prompt_ok_custom_id_and_counter(engine: EngineProcess) -> None:
    expected = cap("post_prompt_ok.json")["response"]
    first = engine.post("/prompt", json={"prompt": txt2img(seed=1), "client_id": "x"})
    assert first.status_code == expected["status"]
    assert_same_keys(first.json(), expected["body"])
    custom = f"custom-{uuid.uuid4().hex}"
    second = engine.post("/prompt", json={"prompt": txt2img(seed=2), "prompt_id": custom})
    assert second.json()["prompt_id"] == custom and second.json()["number"] == first.json()["number"] + 1
    history_entry(engine, custom)
    assert engine.get("/demo/stats").json()["submissions"][custom] == 1


INVALID_MUTATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _mutation(case: str) -> Callable[[Callable[[dict[str, Any]], None]], None]:
    def register(fn: Callable[[dict[str, Any]], None]) -> None:
        def apply(prompt: dict[str, Any]) -> dict[str, Any]:
            fn(prompt)
            return prompt
        INVALID_MUTATIONS[case] = apply
    return register


@_mutation("unknown checkpoint name")
def _(p: dict[str, Any]) -> None:
    p["4"]["inputs"]["ckpt_name"] = "does-not-exist.safetensors"


@_mutation("steps = -1")
def _(p: dict[str, Any]) -> None:
    p["3"]["inputs"]["steps"] = -1


@_mutation("missing node class (unknown class_type)")
def _(p: dict[str, Any]) -> None:
    p["8"]["class_type"] = "NoSuchNodeClass"


@_mutation("several bad inputs at once (ckpt name + steps -1 + cfg 'abc')")
def _(p: dict[str, Any]) -> None:
    p["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    p["3"]["inputs"].update(steps=-1, cfg="abc")


@_mutation("required input missing")
def _(p: dict[str, Any]) -> None:
    del p["3"]["inputs"]["seed"]


@_mutation("link to wrong output type")
def _(p: dict[str, Any]) -> None:
    p["8"]["inputs"]["vae"] = ["4", 1]


@_mutation("node missing class_type")
def _(p: dict[str, Any]) -> None:
    del p["8"]["class_type"]


@_mutation("no output node (SaveImage removed)")
def _(p: dict[str, Any]) -> None:
    del p["9"]


def _sorted_errors(body: dict[str, Any]) -> dict[str, Any]:
    """Errors within a node come in set order on ComfyUI; compare them order-independently."""
    body = copy.deepcopy(body)
    for node in body.get("node_errors", {}).values():
        node["errors"].sort(key=lambda e: (e["type"], e["details"]))
    return body


@pytest.mark.parametrize("case", [c["case"] for c in (json.loads((CAPTURES / "post_prompt_invalid.json")
                                                                 .read_text())["cases"])])
def test_invalid_prompts_match_captures(engine: EngineProcess, case: str) -> None:
    captured = next(c for c in cap("post_prompt_invalid.json")["cases"] if c["case"] == case)
    if case in INVALID_MUTATIONS:
        prompt = INVALID_MUTATIONS[case](txt2img())
    else:
        assert "LoadImage" in case
        prompt = img2img("no_such_file.png")
    response = engine.post("/prompt", json={"prompt": prompt, "client_id": "invalid"})
    assert response.status_code == captured["response"]["status"]
    assert response.headers["Content-Type"] == captured["response"]["headers"]["Content-Type"]
    assert _sorted_errors(response.json()) == _sorted_errors(demo_names(captured["response"]["body"]))


def test_value_bigger_than_max(engine: EngineProcess) -> None:
    body = engine.post("/prompt", json={"prompt": txt2img(cfg=1000.0)}).json()
    error = body["node_errors"]["3"]["errors"][0]
    assert error["type"] == "value_bigger_than_max" and error["message"] == "Value 1000.0 bigger than max of 100.0"


def test_malformed_bodies_match_captures(engine: EngineProcess) -> None:
    ui_workflow = {"nodes": [{"id": 4, "type": "CheckpointLoaderSimple"}], "links": [], "version": 0.4}
    bodies = {
        "JSON object without 'prompt' key": {"json": {"foo": "bar"}},
        "empty JSON object": {"json": {}},
        "'prompt' is an empty object": {"json": {"prompt": {}}},
        "'prompt' is a string": {"json": {"prompt": "hello"}},
        "'prompt' is a list": {"json": {"prompt": [1, 2]}},
        "body is not JSON": {"data": b"this is not json"},
        "body is a JSON array": {"data": b"[1,2,3]"},
        "UI-format workflow (nodes/links) instead of API format": {"json": {"prompt": ui_workflow}},
    }
    for case in cap("post_prompt_malformed.json")["cases"]:
        response = engine.post("/prompt", **bodies[case["case"]])
        expected = case["response"]
        assert response.status_code == expected["status"], case["case"]
        assert response.headers["Content-Type"] == expected["headers"]["Content-Type"], case["case"]
        if isinstance(expected["body"], str):
            assert response.text == expected["body"]
        else:
            assert response.json() == expected["body"]


def test_partially_valid_prompt_runs_valid_outputs(engine: EngineProcess) -> None:
    captured = cap("post_prompt_partial_valid.json")
    prompt = demo_names(captured["request"]["json"]["prompt"])
    prompt["4"]["inputs"]["ckpt_name"] = DEMO_CKPTS[0]
    prompt_id, frames = run(engine, prompt)
    entry = history_entry(engine, prompt_id)
    assert list(entry["outputs"]) == list(captured["history_outputs"])
    assert entry["prompt"][4] == captured["history_outputs_to_execute"]
    # Only output 9 runs: the same sequence as the plain txt2img run (the capture's own run had cached nodes).
    assert types(frames) == cap("capture_meta_basic.json")["txt2img"]["ws_types"]
    assert set(types(frames)) == set(captured["ws_types"])
    response = engine.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 200
    assert response.json()["node_errors"] == captured["response"]["body"]["node_errors"]
    history_entry(engine, response.json()["prompt_id"])


# --- websocket runs ---------------------------------------------------------------------------------------------

def test_txt2img_run_matches_capture(engine: EngineProcess) -> None:
    trace = cap_trace("ws_txt2img_trace.jsonl")
    prompt_id, frames = run(engine, txt2img(seed=8566257))
    assert types(frames) == capture_types(trace) == cap("capture_meta_basic.json")["txt2img"]["ws_types"]
    # Every text message has the captured fields.
    for (kind, actual), recorded in zip(frames, trace):
        if kind == "text":
            assert_same_keys(actual, recorded["data"])
    assert frames[0][1]["data"]["sid"]
    # Type-1 previews: >I 1, >I 1 (JPEG), then a 512x512 JPEG whatever the job size.
    binaries = [data for kind, data in frames if kind == "binary"]
    assert len(binaries) == 2
    for data in binaries:
        assert data[:8].hex() == "0000000100000001" and data[8:12].hex() == "ffd8ffe0"
        with Image.open(io.BytesIO(data[8:])) as img:
            assert (img.format, img.size, img.mode) == ("JPEG", (512, 512), "RGB")
    executed = messages(frames, "executed")[0]
    image = executed["output"]["images"][0]
    assert image["type"] == "output" and image["subfolder"] == "" and image["filename"].endswith("_.png")

    entry = history_entry(engine, prompt_id)
    assert_same_keys(entry, first_history("history_one.json"))
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                          "execution_success"]
    assert entry["outputs"] == {"9": executed["output"]}

    view = engine.get("/view", params=image)
    assert view.status_code == 200 and view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
    with Image.open(io.BytesIO(view.content)) as img:
        assert img.size == (64, 64)


def test_feature_flags_switch_previews_to_type_4(engine: EngineProcess) -> None:
    trace = cap_trace("ws_txt2img_preview_metadata_trace.jsonl")
    prompt_id, frames = run(engine, txt2img(seed=5), feature_flags=True)
    assert frames[1][1] == trace[1]["data"]  # the server's feature_flags answer
    # Same as a plain run, but each preview comes before its progress message and is type 4.
    expected = capture_types(cap_trace("ws_txt2img_trace.jsonl"))
    expected.insert(1, "feature_flags")
    text = ",".join(expected).replace("progress,binary:1", "binary:4,progress")
    assert types(frames) == text.split(",")
    recorded = next(r["data"] for r in trace if r["kind"] == "binary")
    for kind, data in frames:
        if kind == "binary":
            assert data[:4].hex() == "00000004"
            length = int.from_bytes(data[4:8], "big")
            metadata = json.loads(data[8:8 + length])
            assert set(metadata) == set(recorded["metadata"])
            assert metadata["prompt_id"] == prompt_id and metadata["node_id"] == "3"
            assert metadata["image_type"] == "image/jpeg"
            with Image.open(io.BytesIO(data[8 + length:])) as img:
                assert (img.format, img.size) == ("JPEG", (512, 512))


def test_batch_and_determinism(engine: EngineProcess) -> None:
    def pictures(seed: int, batch: int) -> list[bytes]:
        prompt_id, frames = run(engine, txt2img(seed=seed, batch_size=batch, text="a red fox"))
        images = messages(frames, "executed")[0]["output"]["images"]
        assert len(images) == batch
        out = []
        for image in images:
            with Image.open(io.BytesIO(engine.get("/view", params=image).content)) as img:
                out.append(img.convert("RGB").tobytes())
        return out

    two = pictures(42, 2)
    assert two[0] != two[1]
    assert pictures(42, 1)[0] == two[0]
    assert pictures(43, 1)[0] != two[0]


def test_runtime_error_matches_capture(engine: EngineProcess) -> None:
    trace = cap_trace("ws_error_trace.jsonl")
    name = upload(engine, "broken.png", b"this is not an image").json()["name"]
    prompt_id, frames = run(engine, img2img(name))
    error = messages(frames, "execution_error")[0]
    # The capture had nodes 4 and 7 cached; the demo engine (no cache) first runs node 4 in full.
    expected = cap("capture_meta_basic.json")["runtime_error"]["ws_types"]
    assert error["executed"] == ["4"]
    assert types(frames) == expected[:5] + ["progress_state", "executing", "progress_state"] + expected[5:]
    recorded = next(r["data"]["data"] for r in trace if r["kind"] == "text"
                    and r["data"]["type"] == "execution_error")
    assert_same_keys(error, recorded)
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["node_id"] == "1" and error["node_type"] == "LoadImage"
    assert error["current_inputs"] == {"image": [name]}
    assert error["exception_message"].endswith("\n") and error["traceback"]

    entry = history_entry(engine, prompt_id)
    assert_same_keys(entry, first_history("history_failed.json"))
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {} and entry["meta"] == {}
    assert entry["status"]["messages"][-1][0] == "execution_error"


def test_img2img_runs(engine: EngineProcess) -> None:
    name = upload(engine, "source.png", png_bytes((200, 30, 30), 48)).json()["name"]
    prompt_id, frames = run(engine, img2img(name))
    assert messages(frames, "execution_success")
    entry = history_entry(engine, prompt_id)
    assert_same_keys(entry, first_history("history_img2img.json"))
    assert entry["outputs"]["9"]["images"][0]["filename"].startswith("ComfyUI_img2img_")


def test_preview_image_goes_to_temp(engine: EngineProcess) -> None:
    prompt = txt2img(seed=9)
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    prompt_id, frames = run(engine, prompt)
    entry = history_entry(engine, prompt_id)
    assert_same_keys(entry, first_history("history_preview_image.json"))
    image = entry["outputs"]["9"]["images"][0]
    assert image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_")
    assert engine.get("/view", params=image).status_code == 200


def test_interrupt_matches_capture(engine: EngineProcess) -> None:
    trace = cap_trace("ws_interrupt_trace.jsonl")
    client_id = uuid.uuid4().hex
    ws = engine.connect(client_id)
    try:
        frames = [recv(ws)]
        prompt_id = engine.post("/prompt", json={"prompt": txt2img(seed=999, steps=40),
                                                 "client_id": client_id}).json()["prompt_id"]

        def interrupt_after_second_step(frame: Frame) -> None:
            if frame[0] == "text" and frame[1]["type"] == "progress" and frame[1]["data"]["value"] == 2:
                assert engine.post("/interrupt").status_code == 200

        collect_until_done(ws, prompt_id, frames, interrupt_after_second_step)
    finally:
        ws.close()
    sequence = types(frames)
    assert sequence[-3:] == ["execution_interrupted", "status", "executing"]
    assert "execution_success" not in sequence and "execution_error" not in sequence
    interrupted = messages(frames, "execution_interrupted")[0]
    recorded = next(r["data"]["data"] for r in trace if r["kind"] == "text"
                    and r["data"]["type"] == "execution_interrupted")
    assert_same_keys(interrupted, recorded)
    assert interrupted["node_id"] == "3" and interrupted["node_type"] == "KSampler"
    assert max(m["value"] for m in messages(frames, "progress")) < 40

    entry = history_entry(engine, prompt_id)
    assert_same_keys(entry, first_history("history_interrupted.json"))
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"

    # An interrupt while idle does not leak into the next prompt.
    assert engine.post("/interrupt", json={}).status_code == 200
    _, frames = run(engine, txt2img(seed=1000))
    assert "execution_success" in types(frames)


def test_queue_delete_clear_and_targeted_interrupt(engine: EngineProcess) -> None:
    observer = engine.connect(uuid.uuid4().hex)
    owner = engine.connect("client-a")
    try:
        long_id = engine.post("/prompt", json={"prompt": txt2img(seed=1, steps=200),
                                               "client_id": "client-a"}).json()["prompt_id"]
        wait_for(lambda: engine.get("/queue").json()["queue_running"])
        numbers = []
        pending = []
        for seed, front in ((2, False), (3, False), (4, True)):
            body = engine.post("/prompt", json={"prompt": txt2img(seed=seed), "client_id": "client-b",
                                                "front": front}).json()
            numbers.append(body["number"])
            pending.append(body["prompt_id"])
        assert numbers[2] < 0 < numbers[0] < numbers[1]
        queue = engine.get("/queue").json()
        captured = cap("queue_running_with_pending.json")
        assert_same_keys(queue, captured)
        assert [item[1] for item in queue["queue_running"]] == [long_id]
        assert sorted(item[1] for item in queue["queue_pending"]) == sorted(pending)
        assert all(len(item) == 5 and item[3] == {"client_id": "client-b"} and item[4] == ["9"]
                   for item in queue["queue_pending"])
        assert engine.get("/prompt").json() == {"exec_info": {"queue_remaining": 4}}
        assert engine.get(f"/history/{long_id}").json() == {}

        def queue_ids() -> tuple[list[str], list[str]]:
            q = engine.get("/queue").json()
            return [i[1] for i in q["queue_running"]], sorted(i[1] for i in q["queue_pending"])

        # Targeted interrupt of a pending prompt: a no-op.
        response = engine.post("/interrupt", json={"prompt_id": pending[0]})
        assert response.status_code == 200 and response.content == b""
        time.sleep(3 * STEP_DELAY)
        assert queue_ids() == ([long_id], sorted(pending))

        for body in ({"delete": [pending[0]]}, {"delete": [long_id]}, {"delete": [str(uuid.UUID(int=0))]}):
            response = engine.post("/queue", json=body)
            assert response.status_code == 200 and response.content == b""
            assert queue_ids() == ([long_id], sorted(pending[1:]))  # running and unknown ids stay/ignored
        assert engine.post("/queue", json={"clear": True}).content == b""
        assert queue_ids() == ([long_id], [])
        assert engine.get(f"/history/{pending[0]}").json() == {}

        assert engine.post("/interrupt", json={"prompt_id": long_id}).status_code == 200
        entry = history_entry(engine, long_id)
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert engine.get("/queue").json() == cap("queue_empty.json")
        assert not any(engine.get(f"/history/{pid}").json() for pid in pending)
    finally:
        owner.close()
    # The uninvolved socket saw nothing but status broadcasts (ws_queue_experiment_observer_trace.jsonl).
    observer.settimeout(0.3)
    seen = []
    try:
        while True:
            seen.append(recv(observer))
    except websocket.WebSocketTimeoutException:
        pass
    observer.close()
    assert set(types(seen)) == {"status"}
    assert set(capture_types(cap_trace("ws_queue_experiment_observer_trace.jsonl"))) == {"status"}


def test_prompt_without_client_id_broadcasts_progress_only(engine: EngineProcess) -> None:
    observer = engine.connect()  # no clientId: the server makes one up
    sid = recv(observer)[1]["data"]["sid"]
    assert len(sid) == 32
    prompt_id = engine.post("/prompt", json={"prompt": txt2img(seed=77)}).json()["prompt_id"]
    history_entry(engine, prompt_id)
    observer.settimeout(0.3)
    seen: list[Frame] = []
    try:
        while True:
            seen.append(recv(observer))
    except websocket.WebSocketTimeoutException:
        pass
    observer.close()
    expected = set(cap("capture_meta_basic.json")["no_client_id"]["observer_ws_types"])
    assert set(types(seen)) == expected


def test_reconnect_same_client_id_newest_socket_wins(engine: EngineProcess) -> None:
    client_id = uuid.uuid4().hex
    ws1 = engine.connect(client_id)
    recv(ws1)
    prompt_id = engine.post("/prompt", json={"prompt": txt2img(seed=5, steps=30),
                                             "client_id": client_id}).json()["prompt_id"]
    wait_for(lambda: engine.get("/queue").json()["queue_running"])
    while not (lambda f: f[0] == "text" and f[1]["type"] == "progress")(recv(ws1)):
        pass
    ws2 = engine.connect(client_id)
    try:
        first = recv(ws2)[1]
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        second = recv(ws2)[1]
        assert second == {"type": "executing", "data": {"node": "3"}}
        frames = collect_until_done(ws2, prompt_id)
        assert "execution_success" in types(frames)
    finally:
        ws2.close()
    ws1.settimeout(0.2)
    leftovers = []
    try:
        while True:
            leftovers.append(recv(ws1))
    except websocket.WebSocketTimeoutException:
        pass
    ws1.close()
    # At most frames already in flight when ws2 registered; never the end of the prompt.
    assert "execution_success" not in types(leftovers)


# --- history, /view, upload -------------------------------------------------------------------------------------

def test_history_paging_and_delete(engine: EngineProcess) -> None:
    ids = [run(engine, txt2img(seed=300 + i))[0] for i in range(3)]
    for pid in ids:
        history_entry(engine, pid)
    last_two = engine.get("/history", params={"max_items": 2}).json()
    assert list(last_two) == ids[1:]
    everything = list(engine.get("/history").json())
    assert list(engine.get("/history", params={"offset": len(everything) - 1}).json()) == [ids[2]]
    response = engine.post("/history", json={"delete": [ids[0]]})
    assert response.status_code == 200
    assert engine.get(f"/history/{ids[0]}").json() == {}
    assert engine.get(f"/history/{ids[1]}").json() != {}


def test_view_error_cases(engine: EngineProcess) -> None:
    prompt_id, frames = run(engine, txt2img(seed=11))
    name = messages(frames, "executed")[0]["output"]["images"][0]["filename"]
    upload(engine, "viewme.png", png_bytes((1, 2, 3)), overwrite="true")
    upload(engine, "viewme.png", png_bytes((1, 2, 3)), subfolder="sub", overwrite="true")
    for label, case in cap("capture_meta_basic.json")["view"].items():
        query = case["query"]
        if isinstance(query, dict):
            query = "&".join(f"{k}={v}" for k, v in query.items())
        query = query.replace("ComfyUI_00013_.png", name).replace("capture_upload.png", "viewme.png")
        query = query.replace("capture_sub", "sub")
        response = engine.get("/view?" + query)
        assert response.status_code == case["status"], (label, query)
        if case["status"] == 200:
            assert response.headers["Content-Type"] == case["content_type"], label
        else:
            assert response.content == b"", label


def test_upload_rename_rules(engine: EngineProcess) -> None:
    cases = cap("upload_image_response.json")["cases"]
    first = upload(engine, "up.png", png_bytes((9, 9, 9)), type="input", subfolder="", overwrite="true")
    assert first.status_code == 200
    assert_same_keys(first.json(), cases[0]["response"]["body"])
    assert first.json() == {"name": "up.png", "subfolder": "", "type": "input"}
    assert upload(engine, "up.png", png_bytes((9, 9, 9)), type="input").json()["name"] == "up.png"
    assert upload(engine, "up.png", png_bytes((8, 8, 8)), type="input").json()["name"] == "up (1).png"
    assert upload(engine, "up.png", png_bytes((7, 7, 7)), type="input").json()["name"] == "up (2).png"
    sub = upload(engine, "up.png", png_bytes((9, 9, 9)), type="input", subfolder="capsub", overwrite="true")
    assert sub.json() == {"name": "up.png", "subfolder": "capsub", "type": "input"}
    missing = engine.post("/upload/image", files={"type": (None, "input")})
    assert missing.status_code == cases[-1]["response"]["status"] == 400 and missing.content == b""
    # Uploaded files become LoadImage choices, and "sub/name" is accepted by validation.
    assert "up (1).png" in engine.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    accepted = engine.post("/prompt", json={"prompt": img2img("capsub/up.png")})
    assert accepted.status_code == 200
    assert history_entry(engine, accepted.json()["prompt_id"])["status"]["status_str"] == "success"


# --- faults -----------------------------------------------------------------------------------------------------

def test_fail_at_step(engine: EngineProcess) -> None:
    assert engine.faults(fail_at_step=2)["fail_at_step"] == 2
    prompt_id, frames = run(engine, txt2img(seed=21, steps=4))
    error = messages(frames, "execution_error")[0]
    assert error["exception_type"] == "RuntimeError" and "injected" in error["exception_message"].lower()
    assert error["node_id"] == "3" and [m["value"] for m in messages(frames, "progress", prompt_id)] == [1]
    assert types(frames)[-3:] == ["execution_error", "status", "executing"]
    assert history_entry(engine, prompt_id)["status"]["status_str"] == "error"
    assert engine.get("/demo/faults").json()["fail_at_step"] is None  # one-shot
    _, frames = run(engine, txt2img(seed=22, steps=4))
    assert "execution_success" in types(frames)


def test_drop_socket_at_step(engine: EngineProcess) -> None:
    engine.faults(drop_socket_at_step=2)
    client_id = uuid.uuid4().hex
    ws = engine.connect(client_id)
    recv(ws)
    prompt_id = engine.post("/prompt", json={"prompt": txt2img(seed=31, steps=4),
                                             "client_id": client_id}).json()["prompt_id"]
    closed = False
    try:
        for _ in range(200):
            if recv(ws)[0] == "close":
                closed = True
                break
    except websocket.WebSocketConnectionClosedException:
        closed = True
    ws.close()
    assert closed
    entry = history_entry(engine, prompt_id)
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["9"]["images"]
    assert engine.get("/demo/faults").json()["drop_socket_at_step"] is None


def test_reject_next_submit_and_stats(engine: EngineProcess) -> None:
    engine.faults(reject_next_submit=True)
    custom = f"retry-{uuid.uuid4().hex}"
    rejected = engine.post("/prompt", json={"prompt": txt2img(seed=41), "prompt_id": custom})
    assert rejected.status_code == 500
    accepted = engine.post("/prompt", json={"prompt": txt2img(seed=41), "prompt_id": custom})
    assert accepted.status_code == 200
    history_entry(engine, custom)
    stats = engine.get("/demo/stats").json()
    assert stats["submissions"][custom] == 2 and stats["executed"].count(custom) == 1
    assert set(stats) == {"submissions", "executed", "sockets"}


def test_step_delay_persists(engine: EngineProcess) -> None:
    faults = engine.faults(step_delay=STEP_DELAY, node_delay=0.002)
    assert faults["step_delay"] == STEP_DELAY and engine.get("/demo/faults").json()["step_delay"] == STEP_DELAY
    assert engine.post("/demo/faults", json={"no_such_fault": 1}).status_code == 400


def test_refuse_connections_then_die(fresh_engine: Callable[..., EngineProcess]) -> None:
    proc = fresh_engine("--checkpoints", "alpha.safetensors,beta.safetensors")
    assert proc.get("/models/checkpoints").json() == ["alpha.safetensors", "beta.safetensors"]
    pooled = requests.Session()
    assert pooled.get(proc.url("/queue"), timeout=2).status_code == 200
    proc.faults(refuse_connections_for=1.0)
    time.sleep(0.2)
    with pytest.raises(requests.ConnectionError):
        requests.get(proc.url("/queue"), timeout=2)
    with pytest.raises(requests.ConnectionError):  # kept-alive connections were closed too
        pooled.get(proc.url("/queue"), timeout=2)
    wait_for(lambda: _reachable(proc), timeout=5, interval=0.1)

    proc.faults(die_at_step=2)
    prompt = txt2img(seed=1, steps=5)
    prompt["4"]["inputs"]["ckpt_name"] = "alpha.safetensors"
    assert proc.post("/prompt", json={"prompt": prompt}).status_code == 200
    assert proc.proc.wait(10) == 3
    with pytest.raises(requests.ConnectionError):
        requests.get(proc.url("/queue"), timeout=2)


def _reachable(proc: EngineProcess) -> bool:
    try:
        return requests.get(proc.url("/queue"), timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
