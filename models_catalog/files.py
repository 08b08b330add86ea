"""Which ComfyUI inputs name a file on the server, and of which kind: the one rule.

A template that loads LoRA x with checkpoint y can only run where both files are, so
routing, the catalog sync and template forms all ask this module which inputs of a graph
name server files. The names are those of ComfyUI 0.3.64's /object_info
(shared/comfyui/object_info.json); a loader Easel does not know names no file here, and
routing then does not constrain it.

No Django here: the graph walkers of every layer may import it.
"""
from __future__ import annotations

from typing import Any

from generation.comfy import ComfyProtocolError, combo_options

CHECKPOINT = "checkpoint"
LORA = "lora"
VAE = "vae"
UPSCALE_MODEL = "upscale_model"
CONTROLNET = "controlnet"

# The kinds held by models_catalog.ModelFile (checkpoints have their own model, Checkpoint).
MODEL_FILE_KINDS = (LORA, VAE, UPSCALE_MODEL, CONTROLNET)

# (class_type, input_name) → kind, for the loaders of ComfyUI's own nodes.
FILE_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): CHECKPOINT,
    ("CheckpointLoader", "ckpt_name"): CHECKPOINT,
    ("unCLIPCheckpointLoader", "ckpt_name"): CHECKPOINT,
    ("ImageOnlyCheckpointLoader", "ckpt_name"): CHECKPOINT,
    ("CreateHookModelAsLora", "ckpt_name"): CHECKPOINT,
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): CHECKPOINT,
    ("LoraLoader", "lora_name"): LORA,
    ("LoraLoaderModelOnly", "lora_name"): LORA,
    ("CreateHookLora", "lora_name"): LORA,
    ("CreateHookLoraModelOnly", "lora_name"): LORA,
    ("VAELoader", "vae_name"): VAE,
    ("UpscaleModelLoader", "model_name"): UPSCALE_MODEL,
    ("ControlNetLoader", "control_net_name"): CONTROLNET,
    ("DiffControlNetLoader", "control_net_name"): CONTROLNET,
}

# Input names that mean the same folder whichever node has them (custom loaders follow
# ComfyUI's naming). Not `model_name`: API nodes use it for a remote model's name.
_INPUT_NAMES: dict[str, str] = {
    "ckpt_name": CHECKPOINT,
    "lora_name": LORA,
    "vae_name": VAE,
    "control_net_name": CONTROLNET,
}

# Where each kind's list is read from a backend's /object_info.
LISTINGS: dict[str, tuple[str, str]] = {
    CHECKPOINT: ("CheckpointLoaderSimple", "ckpt_name"),
    LORA: ("LoraLoader", "lora_name"),
    VAE: ("VAELoader", "vae_name"),
    UPSCALE_MODEL: ("UpscaleModelLoader", "model_name"),
    CONTROLNET: ("ControlNetLoader", "control_net_name"),
}

# Choices ComfyUI offers that are no file: VAELoader's built-in "pixel_space" (and the
# TAESD previews it lists when their decoders are installed). Every server has them,
# so they are neither catalogued nor a routing constraint.
NOT_FILES: dict[str, frozenset[str]] = {
    VAE: frozenset({"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"}),
}


def file_kind(class_type: str, input_name: str) -> str | None:
    """The kind of server file this input of this node names, or None when it names none."""
    return FILE_INPUTS.get((class_type, input_name)) or _INPUT_NAMES.get(input_name)


def is_server_file(kind: str, name: str) -> bool:
    return bool(name) and name not in NOT_FILES.get(kind, ())


def combo_choices(spec: Any) -> list[str] | None:
    """A COMBO input's choices in either object_info shape (the client's one reading of
    them), or None when the spec is no combo."""
    try:
        return combo_options(spec)
    except ComfyProtocolError:
        return None


def listing(object_info: dict, kind: str) -> list[str] | None:
    """The files of this kind a backend reports in its /object_info.

    [] when the backend lacks the loader node (it has no such file); None when the node
    is there but its input is not a list Easel can read (a protocol surprise)."""
    class_type, input_name = LISTINGS[kind]
    info = object_info.get(class_type)
    if not isinstance(info, dict):
        return []
    inputs = info.get("input") if isinstance(info.get("input"), dict) else {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(input_name)
        if spec is not None:
            choices = combo_choices(spec)
            return None if choices is None else [c for c in choices if is_server_file(kind, c)]
    return None


def graph_files(graph: Any, *, bindings: Any = None) -> dict[str, set[str]]:
    """kind → file names an API-format graph loads (what a task needs of a backend).

    With a template's `bindings`, the inputs they bind are left out: what fills those is
    the task's choice (its checkpoint), not the template's."""
    found: dict[str, set[str]] = {}
    if not isinstance(graph, dict):
        return found
    bound = {
        (str(where[0]), str(where[1])) for where in (bindings.values() if isinstance(bindings, dict) else ())
        if isinstance(where, (list, tuple)) and len(where) == 2
    }
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        for input_name, value in node["inputs"].items():
            if (str(node_id), input_name) in bound:
                continue
            kind = file_kind(str(node.get("class_type", "")), input_name)
            if kind and isinstance(value, str) and is_server_file(kind, value):
                found.setdefault(kind, set()).add(value)
    return found
