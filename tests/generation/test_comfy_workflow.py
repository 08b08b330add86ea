"""render_workflow / validate_bindings / output_nodes on the captured API-format graphs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from generation.comfy.workflow import BindingError, output_nodes, render_workflow, validate_bindings
from tests.conftest import COMFYUI_CAPTURES

BINDINGS = {
    "prompt": ["6", "text"],
    "negative_prompt": ["7", "text"],
    "checkpoint": ["4", "ckpt_name"],
    "width": ["5", "width"],
    "height": ["5", "height"],
    "steps": ["3", "steps"],
    "seed": ["3", "seed"],
}


def _captures() -> Path:
    return COMFYUI_CAPTURES


@pytest.fixture(scope="module")
def txt2img() -> dict:
    return json.loads((_captures() / "workflow_txt2img_api.json").read_text())


@pytest.fixture(scope="module")
def img2img() -> dict:
    return json.loads((_captures() / "workflow_img2img_api.json").read_text())


def test_render_writes_values_and_does_not_mutate(txt2img):
    before = copy.deepcopy(txt2img)
    out = render_workflow(txt2img, BINDINGS, {"prompt": "a dog", "steps": 5, "seed": 42, "unbound": 1})
    assert txt2img == before
    assert out["6"]["inputs"]["text"] == "a dog"
    assert out["3"]["inputs"]["steps"] == 5 and out["3"]["inputs"]["seed"] == 42
    assert out["3"]["inputs"]["model"] == ["4", 0]  # links untouched
    assert out["7"] == txt2img["7"]
    out["3"]["inputs"]["model"].append("x")
    assert txt2img["3"]["inputs"]["model"] == ["4", 0]  # deep copy


def test_render_rejects_bad_bindings(txt2img):
    with pytest.raises(BindingError, match="node 99"):
        render_workflow(txt2img, {"prompt": ["99", "text"]}, {"prompt": "x"})
    with pytest.raises(BindingError, match="no input 'txt'"):
        render_workflow(txt2img, {"prompt": ["6", "txt"]}, {"prompt": "x"})
    with pytest.raises(BindingError, match="link"):
        render_workflow(txt2img, {"model": ["3", "model"]}, {"model": "x"})
    # An unused broken binding does not matter for rendering.
    assert render_workflow(txt2img, {"image": ["1", "image"]}, {"prompt": "x"}) == txt2img


def test_validate_bindings(txt2img, img2img):
    assert validate_bindings(txt2img, BINDINGS) == []
    img2img_bindings = {k: v for k, v in BINDINGS.items() if v[0] != "5"}
    assert validate_bindings(img2img, {**img2img_bindings, "image": ["1", "image"], "denoise": ["3", "denoise"]}) == []
    assert validate_bindings(img2img, BINDINGS) == ["width: node 5 does not exist", "height: node 5 does not exist"]
    problems = validate_bindings(txt2img, {"image": ["1", "image"], "x": ["3"], "clip": ["6", "clip"]})
    assert len(problems) == 3
    assert any("node 1 does not exist" in p for p in problems)


def test_output_nodes(txt2img, img2img):
    assert output_nodes(txt2img) == ["9"]
    assert output_nodes(img2img) == ["9"]
    assert output_nodes(txt2img, output_classes=("PreviewImage",)) == []
    graph = json.loads((_captures() / "workflow_text_frame_api.json").read_text())
    assert output_nodes(graph) == [nid for nid, n in graph.items() if n["class_type"] == "PreviewImage"]
