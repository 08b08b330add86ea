"""Fill Easel values into an API-format ComfyUI graph ({node_id: {class_type, inputs}}).

Bindings map an Easel field to the [node_id, input_name] it controls, so templates
can be any workflow exported with "Save (API)" without Easel knowing its shape.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable


class BindingError(ValueError):
    """A binding does not fit the graph (missing node/input, or it points at a link)."""


def is_link(value: Any) -> bool:
    """In API format a link is [source_node_id, output_index]; anything else is a value."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _binding_problem(graph: dict, field: str, binding: Any) -> str | None:
    if not (isinstance(binding, (list, tuple)) and len(binding) == 2):
        return f"{field}: binding must be [node_id, input_name], got {binding!r}"
    node_id, input_name = str(binding[0]), str(binding[1])
    node = graph.get(node_id)
    if not isinstance(node, dict):
        return f"{field}: node {node_id} does not exist"
    inputs = node.get("inputs")
    if not isinstance(inputs, dict) or input_name not in inputs:
        return f"{field}: node {node_id} ({node.get('class_type', '?')}) has no input '{input_name}'"
    if is_link(inputs[input_name]):
        # Overwriting a link with a literal would silently cut the graph.
        return f"{field}: input '{input_name}' of node {node_id} is a link, not a value"
    return None


def validate_bindings(graph: dict, bindings: dict[str, list]) -> list[str]:
    """Problems with the bindings against this graph; empty when fine."""
    return [p for field, b in bindings.items() if (p := _binding_problem(graph, field, b))]


def render_workflow(graph: dict, bindings: dict[str, list], values: dict) -> dict:
    """A deep copy of `graph` with each bound value written in. Values without a binding
    are ignored (one form can drive templates that expose different fields); only the
    bindings actually used must fit the graph. The input graph is never mutated."""
    rendered = copy.deepcopy(graph)
    for field, value in values.items():
        if field not in bindings:
            continue
        problem = _binding_problem(rendered, field, bindings[field])
        if problem:
            raise BindingError(problem)
        node_id, input_name = str(bindings[field][0]), str(bindings[field][1])
        rendered[node_id]["inputs"][input_name] = copy.deepcopy(value)
    return rendered


def bypass(graph: dict, node_id: str, passthrough: dict[int, str]) -> dict:
    """A copy of `graph` without node `node_id`: whatever read its output i reads what
    fed its input `passthrough[i]` instead (ComfyUI's own "bypass", e.g. a LoRA loader
    left out passes the model and CLIP through). Raises BindingError when an output
    that something reads has nothing to pass through."""
    rendered = copy.deepcopy(graph)
    node = rendered.pop(str(node_id), None)
    if not isinstance(node, dict):
        raise BindingError(f"node {node_id} does not exist")
    inputs = node.get("inputs") or {}
    for other in rendered.values():
        for name, value in (other.get("inputs") or {}).items():
            if is_link(value) and value[0] == str(node_id):
                source = inputs.get(passthrough.get(value[1], ""))
                if not is_link(source):
                    raise BindingError(f"node {node_id} ({node.get('class_type')}) cannot be left out: "
                                       f"nothing passes its output {value[1]} through")
                other["inputs"][name] = list(source)
    return rendered


def output_nodes(graph: dict, output_classes: Iterable[str] = ("SaveImage", "PreviewImage")) -> list[str]:
    classes = set(output_classes)
    return [str(nid) for nid, node in graph.items() if isinstance(node, dict) and node.get("class_type") in classes]
