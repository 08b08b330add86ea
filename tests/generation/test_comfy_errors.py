"""describe_rejection / describe_execution_error / is_transient on the captured bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generation.comfy.client import (
    ComfyPromptRejected,
    ComfyProtocolError,
    ComfySocketClosed,
    ComfyUnreachable,
)
from generation.comfy.errors import describe_execution_error, describe_rejection, is_transient
from tests.conftest import COMFYUI_CAPTURES

BINDINGS = {
    "prompt": ["6", "text"],
    "negative_prompt": ["7", "text"],
    "checkpoint": ["4", "ckpt_name"],
    "width": ["5", "width"],
    "height": ["5", "height"],
    "batch_size": ["5", "batch_size"],
    "steps": ["3", "steps"],
    "cfg": ["3", "cfg"],
    "sampler": ["3", "sampler_name"],
    "scheduler": ["3", "scheduler"],
    "seed": ["3", "seed"],
    "denoise": ["3", "denoise"],
}
IMG2IMG_BINDINGS = {**BINDINGS, "image": ["1", "image"]}


def _captures() -> Path:
    return COMFYUI_CAPTURES


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    root = _captures()
    out = {}
    for name in ("post_prompt_invalid.json", "post_prompt_malformed.json"):
        for case in json.loads((root / name).read_text())["cases"]:
            out[case["case"]] = case["response"]
    return out


@pytest.fixture(scope="module")
def partial() -> dict:
    return json.loads((_captures() / "post_prompt_partial_valid.json").read_text())["response"]


def rejected(resp: dict) -> ComfyPromptRejected:
    return ComfyPromptRejected(resp["status"], resp["body"])


def test_every_captured_rejection_gives_a_message(cases):
    assert len(cases) == 17
    for name, resp in cases.items():
        for arg in (rejected(resp), resp["body"]):
            message, fields = describe_rejection(arg, IMG2IMG_BINDINGS)
            assert message and isinstance(message, str), name
            assert fields and all(isinstance(m, str) and m for msgs in fields.values() for m in msgs), name


def test_unknown_checkpoint(cases):
    message, fields = describe_rejection(rejected(cases["unknown checkpoint name"]), BINDINGS)
    assert fields == {"checkpoint": ["model 'does-not-exist.safetensors' is not installed on this backend"]}
    assert message == "model 'does-not-exist.safetensors' is not installed on this backend"


def test_steps_below_min(cases):
    _, fields = describe_rejection(rejected(cases["steps = -1"]), BINDINGS)
    assert fields == {"steps": ["steps must be at least 1"]}


def test_several_errors_at_once(cases):
    resp = cases["several bad inputs at once (ckpt name + steps -1 + cfg 'abc')"]
    message, fields = describe_rejection(rejected(resp), BINDINGS)
    assert fields == {
        "checkpoint": ["model 'nope.safetensors' is not installed on this backend"],
        "cfg": ["cfg must be a number"],
        "steps": ["steps must be at least 1"],
    }
    assert "cfg must be a number" in message and "steps must be at least 1" in message


def test_required_input_missing(cases):
    _, fields = describe_rejection(rejected(cases["required input missing"]), BINDINGS)
    assert fields == {"seed": ["seed is required"]}


def test_unbound_errors_go_to_all_naming_node(cases):
    _, fields = describe_rejection(rejected(cases["link to wrong output type"]), BINDINGS)
    assert list(fields) == ["__all__"]
    assert "VAEDecode (node 8)" in fields["__all__"][0] and "vae" in fields["__all__"][0]
    # Without bindings even a bound-able error lands in __all__, naming node and class.
    _, fields = describe_rejection(rejected(cases["steps = -1"]), {})
    assert fields["__all__"][0].startswith("KSampler (node 3), input 'steps':")


def test_top_level_errors(cases):
    _, fields = describe_rejection(rejected(cases["missing node class (unknown class_type)"]), BINDINGS)
    assert "NoSuchNodeClass" in fields["__all__"][0] and "#8" in fields["__all__"][0]
    _, fields = describe_rejection(rejected(cases["no output node (SaveImage removed)"]), BINDINGS)
    assert "no output node" in fields["__all__"][0]
    _, fields = describe_rejection(rejected(cases["JSON object without 'prompt' key"]), BINDINGS)
    assert "no workflow" in fields["__all__"][0]
    _, fields = describe_rejection(rejected(cases["node missing class_type"]), BINDINGS)
    assert "class_type" in fields["__all__"][0]


def test_missing_load_image_file(cases):
    resp = cases["LoadImage of a file that does not exist"]
    _, fields = describe_rejection(rejected(resp), IMG2IMG_BINDINGS)
    assert list(fields) == ["image"]
    assert "no_such_file.png" in fields["image"][0] and "upload" in fields["image"][0]


def test_500_text_plain(cases):
    resp = cases["UI-format workflow (nodes/links) instead of API format"]
    assert isinstance(resp["body"], str)
    message, fields = describe_rejection(rejected(resp), BINDINGS)
    assert "API format" in message and "500" in message
    assert fields == {"__all__": [message]}
    message2, _ = describe_rejection(resp["body"], BINDINGS)
    assert "API format" in message2


def test_partial_valid_200(partial):
    exc = ComfyPromptRejected(partial["status"], partial["body"])
    assert exc.status == 200 and "11" in exc.node_errors and exc.error is None
    message, fields = describe_rejection(exc, BINDINGS)
    assert list(fields) == ["__all__"]
    assert "VAEDecode (node 11)" in fields["__all__"][0]
    assert message.startswith("part of the workflow is invalid")


def test_bigger_than_max_and_other_list():
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""},
        "node_errors": {
            "5": {
                "class_type": "EmptyLatentImage",
                "errors": [
                    {
                        "type": "value_bigger_than_max",
                        "message": "Value 99999 bigger than max of 16384",
                        "details": "width",
                        "extra_info": {"input_name": "width", "received_value": 99999},
                    }
                ],
            },
            "3": {
                "class_type": "KSampler",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "sampler_name: 'nope' not in [...]",
                        "extra_info": {"input_name": "sampler_name", "received_value": "nope"},
                    },
                    {
                        "type": "invalid_input_type",
                        "message": "Failed to convert an input value to a INT value",
                        "details": "seed, x",
                        "extra_info": {"input_name": "seed", "input_config": ["INT", {}], "received_value": "x"},
                    },
                ],
            },
        },
    }
    _, fields = describe_rejection(body, BINDINGS)
    assert fields == {
        "width": ["width must be at most 16384"],
        "sampler": ["sampler 'nope' is not available on this backend"],
        "seed": ["seed must be a whole number"],
    }


def test_describe_execution_error():
    root = _captures()
    entry = next(iter(json.loads((root / "history_failed.json").read_text()).values()))
    data = entry["status"]["messages"][-1][1]
    text = describe_execution_error(data)
    assert text.startswith("LoadImage (node 1) failed: PIL.UnidentifiedImageError: cannot identify image file")
    assert not text.endswith("\n")
    entry = next(iter(json.loads((root / "history_interrupted.json").read_text()).values()))
    assert describe_execution_error(entry["status"]["messages"][-1][1]) == "interrupted"
    assert (
        describe_execution_error({"node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError", "exception_message": "boom"})
        == "KSampler (node 3) failed: RuntimeError: boom"
    )


def test_is_transient():
    assert is_transient(ComfyUnreachable("down"))
    assert is_transient(ComfySocketClosed("dropped"))
    assert is_transient(ComfyProtocolError("oops", status=500))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(ComfyProtocolError("bad body", status=200))
    assert not is_transient(ComfyPromptRejected(400, {"error": {"type": "no_prompt"}, "node_errors": {}}))
    assert not is_transient(ComfyPromptRejected(500, "500 Internal Server Error"))
    assert not is_transient(ValueError())
