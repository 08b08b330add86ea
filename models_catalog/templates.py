"""Workflow templates: importing a ComfyUI API-format graph, finding where Easel's
parameters go in it (bindings), checking it against a backend, and describing the
parameters a template exposes so pages and API clients can build forms.

A binding maps an Easel parameter name to the [node_id, input_name] it controls
(see `generation.comfy.workflow.render_workflow`).
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.utils.translation import gettext as _

from generation.comfy import ComfyError, is_link
from generation.limits import SAMPLERS, SCHEDULERS, choices as studio_choices, ranges as studio_ranges

from .models import ComfyBackend, WorkflowTemplate
from .services import comfy_client

logger = logging.getLogger(__name__)

# Easel's parameter names, in the order forms show them.
PARAMETER_NAMES = (
    "checkpoint", "prompt", "negative_prompt", "image", "denoise", "width", "height", "batch_size",
    "seed", "steps", "cfg", "sampler", "scheduler",
)

SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
# Easel parameter → input name, per sampler class. KSamplerAdvanced has no denoise (it
# works with start/end steps instead) and calls its seed noise_seed.
_SAMPLER_INPUTS = {
    "KSampler": {
        "seed": "seed", "steps": "steps", "cfg": "cfg", "sampler": "sampler_name", "scheduler": "scheduler",
        "denoise": "denoise",
    },
    "KSamplerAdvanced": {
        "seed": "noise_seed", "steps": "steps", "cfg": "cfg", "sampler": "sampler_name", "scheduler": "scheduler",
    },
}
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")

_SEED = ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}]
_STEPS = ["INT", {"default": 20, "min": 1, "max": 10000}]
_CFG = ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]

# The input specs of the bindable inputs as ComfyUI 0.3.64 reports them in /object_info
# (tests/fixtures/comfyui/object_info_core.json; KSamplerAdvanced from object_info.json), without
# tooltips. Used when no backend is asked, so a form can be built without a network call.
# Combo lists that depend on the server's files (checkpoints, input images) are left empty.
DEFAULT_INPUT_SPECS: dict[str, dict[str, list]] = {
    "CheckpointLoaderSimple": {"ckpt_name": [[]]},
    "CLIPTextEncode": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}]},
    "EmptyLatentImage": {
        "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
        "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
    },
    "KSampler": {
        "seed": _SEED,
        "steps": _STEPS,
        "cfg": _CFG,
        "sampler_name": [SAMPLERS],
        "scheduler": [SCHEDULERS],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
    },
    "KSamplerAdvanced": {
        "noise_seed": _SEED,
        "steps": _STEPS,
        "cfg": _CFG,
        "sampler_name": [SAMPLERS],
        "scheduler": [SCHEDULERS],
    },
    "LoadImage": {"image": [[], {"image_upload": True}]},
}


# --- graph helpers ----------------------------------------------------------------


def _id_key(node_id: str) -> tuple:
    # ComfyUI ids are usually numbers in strings; sort "10" after "9", names after numbers.
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _nodes(graph: dict) -> list[tuple[str, dict]]:
    """(id, node) pairs of the well-formed nodes, in a stable order."""
    pairs = [
        (str(nid), node)
        for nid, node in graph.items()
        if isinstance(node, dict) and isinstance(node.get("inputs", {}), dict)
    ]
    return sorted(pairs, key=lambda p: _id_key(p[0]))


def _inputs(node: dict) -> dict:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _linked(graph: dict, value: Any) -> tuple[str, dict] | None:
    if is_link(value):
        node = graph.get(value[0])
        if isinstance(node, dict):
            return value[0], node
    return None


def _upstream(graph: dict, start: Any, *, through=None, limit: int = 200) -> list[tuple[str, dict]]:
    """Nodes reachable backwards from a link value, nearest first (breadth-first, inputs
    in their graph order), so the result depends on the links and not on node ids.
    `through(input_name)` limits which inputs of intermediate nodes are followed."""
    found: list[tuple[str, dict]] = []
    seen: set[str] = set()
    queue = [start]
    while queue and len(found) < limit:
        hit = _linked(graph, queue.pop(0))
        if hit is None or hit[0] in seen:
            continue
        seen.add(hit[0])
        found.append(hit)
        for name, value in _inputs(hit[1]).items():
            if through is None or through(name):
                queue.append(value)
    return found


def _literal(node: dict, input_name: str) -> bool:
    inputs = _inputs(node)
    return input_name in inputs and not is_link(inputs[input_name])


def _first(candidates: list[tuple[str, dict]], class_type: str) -> tuple[str, dict] | None:
    return next(((nid, n) for nid, n in candidates if n.get("class_type") == class_type), None)


def _pick_sampler(graph: dict) -> tuple[str, dict] | None:
    samplers = [(nid, n) for nid, n in _nodes(graph) if n.get("class_type") in SAMPLER_CLASSES]
    # In a two-pass (hires fix) graph the first pass is the one whose latent does not come
    # from another sampler; that is where the prompt, seed and size matter.
    for nid, node in samplers:
        upstream = _upstream(graph, _inputs(node).get("latent_image"))
        if not any(n.get("class_type") in SAMPLER_CLASSES for _, n in upstream):
            return nid, node
    return samplers[0] if samplers else None


# --- detection --------------------------------------------------------------------


def bindings_detect(graph: dict) -> dict[str, list]:
    """Where Easel's parameters go in an API-format graph, found from its node classes
    and links. Only literal inputs are bound (writing a value over a link would cut the
    graph). The result is deterministic for a given graph."""
    if not isinstance(graph, dict):
        return {}
    bindings: dict[str, list] = {}

    def bind(name: str, hit: tuple[str, dict] | None, input_name: str) -> None:
        if hit is not None and name not in bindings and _literal(hit[1], input_name):
            bindings[name] = [hit[0], input_name]

    nodes = _nodes(graph)
    sampler = _pick_sampler(graph)
    s_inputs = _inputs(sampler[1]) if sampler else {}

    # The model: follow the sampler's model link (through LoRA loaders and the like).
    loader = _first(_upstream(graph, s_inputs.get("model")), "CheckpointLoaderSimple")
    bind("checkpoint", loader or _first(nodes, "CheckpointLoaderSimple"), "ckpt_name")

    # Prompts: follow positive/negative through conditioning nodes only, so a node that
    # takes both (ControlNet apply) does not lead the positive side to the negative text.
    for name, slot in (("prompt", "positive"), ("negative_prompt", "negative")):
        def through(input_name: str, slot=slot) -> bool:
            return input_name == slot or "conditioning" in input_name

        encoder = _first(_upstream(graph, s_inputs.get(slot), through=through), "CLIPTextEncode")
        if encoder and any(b[0] == encoder[0] for b in bindings.values()):
            continue  # one text box cannot be both prompts
        bind(name, encoder, "text")

    latent_chain = _upstream(graph, s_inputs.get("latent_image"))
    empty = _first(latent_chain, "EmptyLatentImage") or (None if sampler else _first(nodes, "EmptyLatentImage"))
    for name in ("width", "height", "batch_size"):
        bind(name, empty, name)

    if sampler:
        class_type = sampler[1].get("class_type")
        for name, input_name in _SAMPLER_INPUTS[class_type].items():
            # Denoise only means something when sampling starts from a picture; below 1 on
            # an empty latent it just gives a washed-out image, so txt2img does not expose it.
            if name == "denoise" and not _first(latent_chain, "LoadImage"):
                continue
            bind(name, sampler, input_name)

    # The source picture: the one feeding the latent, else any LoadImage (a ControlNet or
    # inpainting input still needs the user's picture).
    bind("image", _first(latent_chain, "LoadImage") or _first(nodes, "LoadImage"), "image")
    return {name: bindings[name] for name in PARAMETER_NAMES if name in bindings}


# --- validation -------------------------------------------------------------------


def _add(errors: dict[str, list[str]], key: str, message: str) -> None:
    errors.setdefault(str(key), []).append(message)


def _class_inputs(spec: dict) -> tuple[dict, dict]:
    sections = spec.get("input") if isinstance(spec, dict) else None
    sections = sections if isinstance(sections, dict) else {}
    required = sections.get("required") or {}
    known = {**required, **(sections.get("optional") or {}), **(sections.get("hidden") or {})}
    return required, known


def is_ui_format(graph: Any) -> bool:
    """A workflow saved from the editor: {"nodes": [...], "links": [...], ...}. (In API
    format every value is a node object, so a list here cannot be a node.)"""
    return isinstance(graph, dict) and any(isinstance(graph.get(k), list) for k in ("nodes", "links"))


def template_validate(
    *, graph: Any, bindings: Any, object_info: dict | None, kind: str | None = None
) -> dict[str, list[str]]:
    """Problems with a template, keyed by node id (or "graph" / "bindings"); {} = valid.

    Structural checks always run; node classes and input names are checked only when
    `object_info` (a backend's GET /object_info) is given and not empty.
    """
    errors: dict[str, list[str]] = {}
    if not isinstance(graph, dict):
        _add(errors, "graph", _("The workflow must be a JSON object of nodes ({\"3\": {\"class_type\": …}})."))
        return errors
    if is_ui_format(graph):
        _add(
            errors,
            "graph",
            _(
                "This is a workflow saved from the ComfyUI editor (UI format, with \"nodes\" and \"links\"). "
                "In ComfyUI use Workflow → Export (API) and import that \"API format\" file instead."
            ),
        )
        return errors
    if not graph:
        _add(errors, "graph", _("The workflow has no nodes."))
        return errors

    info = object_info or {}
    output_classes = set(OUTPUT_CLASSES) | {
        name for name, spec in info.items() if isinstance(spec, dict) and spec.get("output_node")
    }
    has_output = False
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            _add(errors, node_id, _("Not a node: expected an object with class_type and inputs."))
            continue
        class_type = node.get("class_type")
        if not class_type or not isinstance(class_type, str):
            _add(errors, node_id, _("The node has no class_type. Export the workflow in API format."))
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            _add(errors, node_id, _("The inputs of %(cls)s must be an object.") % {"cls": class_type})
            continue
        has_output = has_output or class_type in output_classes
        for name, value in inputs.items():
            if is_link(value) and value[0] not in graph:
                _add(
                    errors,
                    node_id,
                    _("Input '%(input)s' of %(cls)s is linked to node %(src)s, which is not in the workflow.")
                    % {"input": name, "cls": class_type, "src": value[0]},
                )
        if not info:
            continue
        if class_type not in info:
            _add(
                errors,
                node_id,
                _("Unknown node class %(cls)s: the backend does not have it (a missing custom node?).")
                % {"cls": class_type},
            )
            continue
        required, known = _class_inputs(info[class_type])
        for name in inputs:
            if name not in known:
                _add(errors, node_id, _("%(cls)s has no input '%(input)s'.") % {"cls": class_type, "input": name})
        for name in required:
            if name not in inputs:
                _add(
                    errors,
                    node_id,
                    _("Required input '%(input)s' of %(cls)s is missing.") % {"cls": class_type, "input": name},
                )
    if not has_output:
        _add(errors, "graph", _("The workflow has no output node: add a SaveImage (or PreviewImage) node."))

    if not isinstance(bindings, dict):
        _add(errors, "bindings", _("Bindings must be an object: {\"prompt\": [\"6\", \"text\"], …}."))
        return errors
    for name, binding in bindings.items():
        if name not in PARAMETER_NAMES:
            _add(
                errors,
                "bindings",
                _("Unknown parameter '%(name)s'. Easel's parameters are: %(names)s.")
                % {"name": name, "names": ", ".join(PARAMETER_NAMES)},
            )
            continue
        if not (isinstance(binding, (list, tuple)) and len(binding) == 2):
            _add(errors, "bindings", _("%(name)s: a binding is [node_id, input_name].") % {"name": name})
            continue
        node_id, input_name = str(binding[0]), str(binding[1])
        node = graph.get(node_id)
        if not isinstance(node, dict):
            _add(
                errors, "bindings", _("%(name)s is bound to node %(node)s, which does not exist.")
                % {"name": name, "node": node_id}
            )
            continue
        inputs = _inputs(node)
        if input_name not in inputs:
            _add(
                errors,
                node_id,
                _("%(name)s is bound to input '%(input)s', which this node does not have.")
                % {"name": name, "input": input_name},
            )
        elif is_link(inputs[input_name]):
            _add(
                errors,
                node_id,
                _("%(name)s is bound to input '%(input)s', which is a link to another node, not a value.")
                % {"name": name, "input": input_name},
            )
    if kind == WorkflowTemplate.KIND_IMG2IMG and "image" not in bindings:
        _add(
            errors,
            "bindings",
            _("An image-to-image template needs an 'image' binding (a LoadImage node's image input)."),
        )
    return errors


def errors_describe(errors: dict[str, list[str]], graph: Any) -> list[str]:
    """One line per problem, naming the node and its class, for messages and logs."""
    lines = []
    for key, messages in errors.items():
        node = graph.get(key) if isinstance(graph, dict) else None
        if isinstance(node, dict):
            where = _("Node %(id)s (%(cls)s)") % {"id": key, "cls": node.get("class_type") or "?"}
        elif key == "graph":
            where = _("Workflow")
        elif key == "bindings":
            where = _("Bindings")
        else:
            where = key
        lines += [f"{where}: {m}" for m in messages]
    return lines


# --- import -----------------------------------------------------------------------


def backend_object_info(*, backend: ComfyBackend) -> dict:
    """The backend's full /object_info (raises ComfyError when it cannot be read)."""
    return comfy_client(backend).object_info()


def object_info_any(*, backend: ComfyBackend | None = None) -> tuple[ComfyBackend | None, dict]:
    """(backend asked, its /object_info): `backend` if given (ComfyError propagates),
    else the first enabled, online backend that answers; (None, {}) if none. Backends
    already known to be offline are skipped: each would cost a connection timeout."""
    if backend is not None:
        return backend, backend_object_info(backend=backend)
    for candidate in ComfyBackend.objects.filter(enabled=True, is_online=True).order_by("name", "pk"):
        try:
            return candidate, backend_object_info(backend=candidate)
        except ComfyError as exc:
            logger.warning("object_info: %s unreachable, trying the next backend: %s", candidate.name, exc)
    return None, {}


def _object_info_for_import(backend: ComfyBackend | None) -> dict:
    try:
        # No backend to ask gives {}: the structural checks still run, and node classes are
        # checked later (the admin's "validate" action, or ComfyUI itself at submit time).
        return object_info_any(backend=backend)[1]
    except ComfyError as exc:
        # Staff asked for this backend explicitly: not checking would be a silent lie.
        raise ValidationError(
            {"backend": [_("Could not read the node list of %(name)s: %(e)s") % {"name": backend.name, "e": exc}]}
        ) from exc


def template_check(
    *, template: WorkflowTemplate, object_info: dict | None = None, backend: ComfyBackend | None = None
) -> dict[str, list[str]]:
    """Validate a stored template (for the admin action); see `template_validate`."""
    if object_info is None:
        object_info = object_info_any(backend=backend)[1]
    return template_validate(
        graph=template.graph, bindings=template.bindings, object_info=object_info, kind=template.kind
    )


def template_import(
    *,
    name: str,
    slug: str,
    graph: Any,
    kind: str | None = None,
    bindings: dict | None = None,
    backend: ComfyBackend | None = None,
    description: str = "",
) -> WorkflowTemplate:
    """Store an API-format ComfyUI workflow as a template (enabled, not the default).

    Bindings are detected when not given; the kind is img2img when a picture is bound.
    Raises ValidationError keyed by field ("name", "slug", "backend") or node id.
    """
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name:
        _add(errors, "name", _("Give the template a name."))
    try:
        validate_slug(slug)
    except ValidationError as exc:
        errors["slug"] = list(exc.messages)
    else:
        if WorkflowTemplate.objects.filter(slug=slug).exists():
            _add(errors, "slug", _("A template with the slug %(slug)s already exists.") % {"slug": slug})
    if kind is not None and kind not in dict(WorkflowTemplate.KIND_CHOICES):
        _add(errors, "kind", _("Unknown kind: %(kind)s.") % {"kind": kind})
    if bindings is None:
        bindings = bindings_detect(graph) if isinstance(graph, dict) and not is_ui_format(graph) else {}
    if kind is None:
        kind = WorkflowTemplate.KIND_IMG2IMG if "image" in bindings else WorkflowTemplate.KIND_TXT2IMG
    # Only ask a backend about a graph that could be valid at all.
    well_formed = isinstance(graph, dict) and bool(graph) and not is_ui_format(graph)
    object_info = _object_info_for_import(backend) if well_formed else {}
    errors.update(template_validate(graph=graph, bindings=bindings, object_info=object_info, kind=kind))
    if errors:
        raise ValidationError(errors)
    return WorkflowTemplate.objects.create(
        name=name,
        slug=slug,
        kind=kind,
        graph=graph,
        bindings=bindings,
        description=description,
        enabled=True,
        is_default=False,
        builtin=False,
    )


# --- parameters -------------------------------------------------------------------


def _input_spec(object_info: dict | None, class_type: str, input_name: str) -> list | None:
    if object_info and class_type in object_info:
        _, known = _class_inputs(object_info[class_type])
        spec = known.get(input_name)
    else:
        spec = DEFAULT_INPUT_SPECS.get(class_type, {}).get(input_name)
    return copy.deepcopy(spec) if isinstance(spec, list) and spec else None


def _combo(spec: list) -> list[str] | None:
    head = spec[0]
    if isinstance(head, list):
        return [str(x) for x in head]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(x) for x in spec[1].get("options") or []]
    return None


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def template_parameters(
    template: WorkflowTemplate, *, object_info: dict | None = None, backend: ComfyBackend | None = None
) -> list[dict]:
    """The Easel parameters a template exposes, for building forms.

    Each item: name, type (checkpoint / image / string / integer / float / choice),
    default (the graph's literal value; for the image none), required, and min/max/step
    or choices. Ranges come from `object_info` (or `backend`'s, read now) when given,
    else from ComfyUI 0.3.64's node specs; numeric ranges are narrowed to what the studio
    accepts and choices to the samplers/schedulers it knows. The checkpoint's choices are
    the catalog's, not listed here.
    """
    if object_info is None and backend is not None:
        try:
            object_info = backend_object_info(backend=backend)
        except ComfyError as exc:
            logger.warning("template parameters: %s unreachable, using defaults: %s", backend.name, exc)
    graph = template.graph if isinstance(template.graph, dict) else {}
    bindings = template.bindings if isinstance(template.bindings, dict) else {}
    # What generation_create accepts; a form offering more would only produce errors.
    limits = studio_ranges()
    params = []
    for name in PARAMETER_NAMES:
        binding = bindings.get(name)
        if not (isinstance(binding, (list, tuple)) and len(binding) == 2):
            continue
        node_id, input_name = str(binding[0]), str(binding[1])
        node = graph.get(node_id) if isinstance(graph.get(node_id), dict) else {}
        default = _inputs(node).get(input_name)
        if is_link(default):
            default = None
        item: dict[str, Any] = {"name": name, "node": node_id, "input": input_name, "required": name == "image"}
        spec = _input_spec(object_info, str(node.get("class_type", "")), input_name)
        options = spec[1] if spec and len(spec) > 1 and isinstance(spec[1], dict) else {}
        if name == "checkpoint":
            item.update(type="checkpoint", default=default)
        elif name == "image":
            # The graph's file name is the author's example picture, not a default for users.
            item.update(type="image", default=None)
        elif name in ("sampler", "scheduler"):
            choices = (_combo(spec) if spec else None) or []
            known = studio_choices()[name]
            choices = [c for c in choices if c in known] or list(known)
            item.update(type="choice", default=default, choices=choices)
        elif spec and spec[0] in ("INT", "FLOAT"):
            kind = "integer" if spec[0] == "INT" else "float"
            low, high = options.get("min"), options.get("max")
            if name in limits:
                studio_low, studio_high = limits[name].low, limits[name].high
                low = studio_low if low is None else max(low, studio_low)
                high = studio_high if high is None else min(high, studio_high)
            item.update(type=kind, default=default, min=low, max=high)
            if "step" in options:
                item["step"] = options["step"]
            elif kind == "integer":
                item["step"] = 1
        elif spec and spec[0] == "STRING":
            item.update(type="string", default=default, multiline=bool(options.get("multiline")))
        else:
            # A custom node's input with no spec: describe it by the graph's value.
            item.update(type=_type_of(default), default=default)
        params.append(item)
    return params
