"""The built-in tool graphs (``models_catalog/builtin/*_api.json``) against a real ComfyUI 0.3.64's node list.

``tests/fixtures/comfyui/object_info.json`` is the full ``GET /object_info`` of a real ComfyUI 0.3.64. Every node
class, input name, link type and literal value of each graph is checked against it, so a real server accepts the
graph; the lists that depend on a server's files (checkpoints, LoRAs, upscale models, VAEs) are checked against the
demo engine's own lists, which is what the graphs default to. The engine's validation must accept them too. No
engine process, no Django.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from generation.demo_engine import options as engine_options
from generation.demo_engine.options import EngineOptions
from generation.demo_engine.validation import validate_prompt
from tests.conftest import COMFYUI_CAPTURES

BUILTIN = Path(__file__).resolve().parents[2] / "models_catalog" / "builtin"
TOOL_GRAPHS = ("txt2img_loras_api.json", "hires_fix_api.json", "upscale_api.json", "inpaint_api.json")
OBJECT_INFO: dict[str, Any] = json.loads((COMFYUI_CAPTURES / "object_info.json").read_text())

#: Inputs whose choices are the files a server has: checked against the demo engine's lists, not the capture's
#: (whose machine had random-weight checkpoints and no LoRAs or upscale models). LoadImage / LoadImageMask
#: ``image`` are not here: their capture list, ``example.png``, is the file a stock ComfyUI ships in its input folder.
FILE_LISTS: dict[tuple[str, str], list[str]] = {
    ("CheckpointLoaderSimple", "ckpt_name"): list(engine_options.DEFAULT_CHECKPOINTS),
    ("LoraLoader", "lora_name"): list(engine_options.DEFAULT_LORAS),
    ("LoraLoaderModelOnly", "lora_name"): list(engine_options.DEFAULT_LORAS),
    ("UpscaleModelLoader", "model_name"): list(engine_options.DEFAULT_UPSCALE_MODELS),
    ("VAELoader", "vae_name"): [*engine_options.DEFAULT_VAES, "pixel_space"],
}


@pytest.fixture(autouse=True)
def _fast_hasher() -> None:
    """Shadows the suite-wide autouse fixture of the same name, which needs pytest-django's ``settings``."""


def load(name: str) -> dict[str, Any]:
    return json.loads((BUILTIN / name).read_text())


def _choices(spec: list[Any]) -> list[Any] | None:
    """A combo's choices in either form (``[[...], {...}]`` or ``["COMBO", {"options": [...]}]``), else None."""
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return spec[1].get("options", []) if len(spec) > 1 else []
    return None


def _literal_problem(node_id: str, class_type: str, name: str, spec: list[Any], value: Any) -> str | None:
    where = f"node {node_id} ({class_type}).{name} = {value!r}"
    kind, extra = spec[0], (spec[1] if len(spec) > 1 else {})
    choices = FILE_LISTS.get((class_type, name), _choices(spec))
    if choices is not None:
        return None if value in choices else f"{where}: not one of {choices}"
    expected = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}.get(kind)
    if expected is None:
        return f"{where}: a {kind} input needs a link, not a literal"
    if isinstance(value, bool) != (kind == "BOOLEAN") or not isinstance(value, expected):
        return f"{where}: not a {kind}"
    if "min" in extra and value < extra["min"]:
        return f"{where}: smaller than min {extra['min']}"
    if "max" in extra and value > extra["max"]:
        return f"{where}: bigger than max {extra['max']}"
    return None


def graph_problems(graph: dict[str, Any], info: dict[str, Any] = OBJECT_INFO) -> list[str]:
    """Everything a real ComfyUI would refuse (or silently drop) in an API-format graph, as readable lines."""
    problems: list[str] = []
    for node_id, node in graph.items():
        if not isinstance(node_id, str) or set(node) != {"class_type", "inputs"}:
            problems.append(f"node {node_id!r}: expected exactly class_type and inputs")
            continue
        class_type = node["class_type"]
        if class_type not in info:
            problems.append(f"node {node_id}: ComfyUI has no class {class_type}")
            continue
        declared = {**info[class_type]["input"].get("required", {}), **info[class_type]["input"].get("optional", {})}
        for name in info[class_type]["input"].get("required", {}):
            if name not in node["inputs"]:
                problems.append(f"node {node_id} ({class_type}): required input {name} is missing")
        for name, value in node["inputs"].items():
            if name not in declared:  # ComfyUI ignores unknown inputs without a word: a typo would go unnoticed
                problems.append(f"node {node_id} ({class_type}): {class_type} has no input {name}")
                continue
            spec = declared[name]
            if isinstance(value, list):
                if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
                    problems.append(f"node {node_id}.{name}: a link is [node_id (string), output_index]")
                    continue
                source = graph.get(value[0])
                if source is None or source.get("class_type") not in info:
                    problems.append(f"node {node_id}.{name}: links to unknown node {value[0]}")
                    continue
                outputs = info[source["class_type"]]["output"]
                if not 0 <= value[1] < len(outputs):
                    problems.append(f"node {node_id}.{name}: {source['class_type']} has no output {value[1]}")
                elif outputs[value[1]] != spec[0]:
                    problems.append(f"node {node_id}.{name}: gets {outputs[value[1]]}, needs {spec[0]}")
                continue
            problem = _literal_problem(node_id, class_type, name, spec, value)
            if problem:
                problems.append(problem)

    # ComfyUI runs only what an output node needs: a node no output depends on would be dropped silently.
    outputs = [i for i, n in graph.items() if info.get(n.get("class_type"), {}).get("output_node")]
    if not outputs:
        problems.append("no output node")
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in needed or node_id not in graph:
            continue
        needed.add(node_id)
        stack.extend(v[0] for v in graph[node_id].get("inputs", {}).values() if isinstance(v, list) and v)
    for node_id in sorted(set(graph) - needed):
        problems.append(f"node {node_id}: no output node depends on it")
    return problems


@pytest.mark.parametrize("name", TOOL_GRAPHS)
def test_tool_graph_is_valid_for_comfyui_0364(name: str) -> None:
    graph = load(name)
    assert graph_problems(graph) == []
    # The house style of the graphs beside them: node ids are numbers in strings, one output, SaveImage "9"
    # with the prefix "easel".
    assert all(node_id.isdigit() for node_id in graph)
    assert [i for i, n in graph.items() if OBJECT_INFO[n["class_type"]]["output_node"]] == ["9"]
    assert graph["9"]["class_type"] == "SaveImage" and graph["9"]["inputs"]["filename_prefix"] == "easel"


def test_existing_builtin_graphs_pass_the_same_check() -> None:
    """The checker agrees with the graphs Easel already ships and runs (a control for the check itself)."""
    for name in ("txt2img_api.json", "img2img_api.json"):
        graph = load(name)
        graph.get("1", {}).get("inputs", {}).update(image="example.png")  # the capture's upload name
        assert graph_problems(graph) == [], name


def test_the_checker_finds_what_comfyui_refuses() -> None:
    graph = load("txt2img_loras_api.json")
    broken = copy.deepcopy(graph)
    broken["10"]["inputs"]["lora_name"] = "not-installed.safetensors"
    broken["11"]["inputs"]["strength_model"] = 1000.0
    broken["12"]["inputs"]["strength_clip"] = "strong"
    broken["3"]["inputs"]["model"] = ["13", 1]  # a CLIP where a MODEL goes
    del broken["5"]["inputs"]["width"]
    broken["6"]["inputs"]["txt"] = "typo"
    broken["3"]["inputs"]["sampler_name"] = "euler_fast"
    broken["20"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    problems = graph_problems(broken)
    for expected in ("node 10 (LoraLoader).lora_name", "node 11 (LoraLoader).strength_model = 1000.0: bigger",
                     "node 12 (LoraLoader).strength_clip = 'strong': not a FLOAT", "node 3.model: gets CLIP",
                     "required input width is missing", "has no input txt", "node 3 (KSampler).sampler_name",
                     "node 20: no output node depends on it"):
        assert any(expected in line for line in problems), (expected, problems)
    assert len(problems) == 8, problems


def test_lora_graph_chains_four_unused_loras() -> None:
    """Four LoraLoaders in a chain, each taking model and clip from the one before, all at strength 0 (a LoRA at
    strength 0 changes nothing, ComfyUI does not even read its file), each defaulting to a different demo LoRA."""
    graph = load("txt2img_loras_api.json")
    chain = ["10", "11", "12", "13"]
    previous = "4"
    for node_id in chain:
        inputs = graph[node_id]["inputs"]
        assert graph[node_id]["class_type"] == "LoraLoader"
        assert inputs["model"] == [previous, 0] and inputs["clip"] == [previous, 1]
        assert inputs["strength_model"] == inputs["strength_clip"] == 0.0
        previous = node_id
    assert sorted(graph[n]["inputs"]["lora_name"] for n in chain) == sorted(engine_options.DEFAULT_LORAS)
    assert graph["3"]["inputs"]["model"] == ["13", 0]
    assert graph["6"]["inputs"]["clip"] == graph["7"]["inputs"]["clip"] == ["13", 1]


def test_hires_graph_samples_twice_around_a_latent_upscale() -> None:
    graph = load("hires_fix_api.json")
    assert graph["10"] == {"class_type": "LatentUpscaleBy",
                           "inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5, "samples": ["3", 0]}}
    first, second = graph["3"]["inputs"], graph["11"]["inputs"]
    assert first["latent_image"] == ["5", 0] and first["denoise"] == 1.0
    assert second["latent_image"] == ["10", 0] and second["denoise"] == 0.5
    assert first["seed"] == second["seed"]
    assert graph["8"]["inputs"]["samples"] == ["11", 0]


def test_upscale_and_inpaint_graphs_wiring() -> None:
    upscale = load("upscale_api.json")
    assert [upscale[n]["class_type"] for n in ("1", "2", "3", "4", "9")] == [
        "LoadImage", "UpscaleModelLoader", "ImageUpscaleWithModel", "ImageScaleBy", "SaveImage"]
    assert upscale["4"]["inputs"]["scale_by"] == 1.0  # the model's own factor unless the user asks for more
    inpaint = load("inpaint_api.json")
    encode = inpaint["2"]
    assert encode["class_type"] == "VAEEncodeForInpaint"
    assert encode["inputs"]["pixels"] == ["1", 0] and encode["inputs"]["mask"] == ["5", 0]
    assert inpaint["5"]["class_type"] == "LoadImageMask" and inpaint["5"]["inputs"]["channel"] == "red"
    assert inpaint["3"]["inputs"]["latent_image"] == ["2", 0] and inpaint["3"]["inputs"]["denoise"] == 1.0


@pytest.mark.parametrize("name", TOOL_GRAPHS)
def test_demo_engine_validation_accepts_the_graph(name: str, tmp_path: Path) -> None:
    """The engine's own port of ComfyUI's validation accepts each graph as shipped (with example.png uploaded)."""
    options = EngineOptions(output_dir=tmp_path / "out", input_dir=tmp_path / "in", temp_dir=tmp_path / "temp")
    (options.input_dir / "example.png").write_bytes(b"only its existence is validated")
    result = validate_prompt(options, load(name))
    assert (result.ok, result.error, result.outputs, result.node_errors) == (True, None, ["9"], {})
