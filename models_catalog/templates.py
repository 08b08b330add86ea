"""Workflow templates: importing a ComfyUI API-format graph, finding where Easel's
parameters go in it (bindings), checking it against a backend, and describing the
parameters a template exposes so pages and API clients can build forms.

A binding maps an Easel parameter name to the [node_id, input_name] it controls
(see `generation.comfy.workflow.render_workflow`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils.translation import gettext as _, gettext_lazy

from generation.comfy import ComfyError, bypass, is_link, render_workflow
from generation.limits import SAMPLERS, SCHEDULERS, choices as studio_choices, ranges as studio_ranges

from . import inputs as kinds
from .builtin import NODE_SPECS, known_spec, shipped_text
from .inputs import Spec, class_inputs, narrow, spec_from
from .models import ComfyBackend, TemplateInput, WorkflowTemplate
from .services import comfy_client

logger = logging.getLogger(__name__)

# Easel's parameter names, in the order forms show them: the built-in inputs, sent as a
# request's top-level fields. Any other input name is a custom input (under `inputs`).
PARAMETER_NAMES = (
    "checkpoint", "prompt", "negative_prompt", "image", "denoise", "width", "height", "batch_size",
    "seed", "steps", "cfg", "sampler", "scheduler",
)
PARAMETER_LABELS = {
    "checkpoint": gettext_lazy("Model"), "prompt": gettext_lazy("Prompt"),
    "negative_prompt": gettext_lazy("Negative prompt"), "image": gettext_lazy("Source image"),
    "denoise": gettext_lazy("Denoise"), "width": gettext_lazy("Width"), "height": gettext_lazy("Height"),
    "batch_size": gettext_lazy("Images"), "seed": gettext_lazy("Seed"), "steps": gettext_lazy("Steps"),
    "cfg": gettext_lazy("CFG"), "sampler": gettext_lazy("Sampler"), "scheduler": gettext_lazy("Scheduler"),
}
# Easel's parameters whose default an imported template sets from its graph's value
# (not the checkpoint, the prompt, the seed, which stays random, or the picture).
GRAPH_DEFAULTS = ("negative_prompt", "width", "height", "batch_size", "steps", "cfg", "sampler", "scheduler", "denoise")
# Easel's parameters whose request field has another name than the input.
REQUEST_FIELDS = {"checkpoint": "model_name", "image": "source_image"}

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


# Literal inputs of common nodes that detection proposes as custom inputs, with the
# name it gives them (numbered when a graph has several such nodes, e.g. lora_1, lora_2).
_PROPOSED = {
    "LoraLoader": (("lora_name", "lora", True), ("strength_model", "lora_strength", False),
                   ("strength_clip", "lora_clip_strength", False)),
    "LoraLoaderModelOnly": (("lora_name", "lora", True), ("strength_model", "lora_strength", False)),
    "LatentUpscaleBy": (("scale_by", "upscale_by", False),),
    "ImageScaleBy": (("scale_by", "scale_by", False),),
    "UpscaleModelLoader": (("model_name", "upscale_model", False),),
    "VAELoader": (("vae_name", "vae", False),),
    "LoadImageMask": (("image", "mask", False),),
    "VAEEncodeForInpaint": (("grow_mask_by", "grow_mask_by", False),),
}


def _numbered(base: str, n: int, count: int) -> str:
    """lora → lora_2; lora_strength → lora_2_strength (the number after the kind)."""
    if count == 1:
        return base
    head, _, tail = base.partition("_")
    return f"{head}_{n}" + (f"_{tail}" if tail else "")


def inputs_detect(graph: dict) -> list[dict]:
    """The inputs an imported graph proposes: Easel's parameters where `bindings_detect`
    finds them, then the literal inputs of common nodes (LoRA loaders and their
    strengths, upscale factors and models, VAEs, mask images). Each item: name, node_id,
    input_name, group, optional. Staff confirm or edit them in the admin."""
    if not isinstance(graph, dict) or is_ui_format(graph):
        return []
    found = [
        {"name": name, "node_id": target[0], "input_name": target[1],
         "group": "advanced" if name in ("seed", "steps", "cfg", "sampler", "scheduler") else "basic",
         "optional": False}
        for name, target in bindings_detect(graph).items()
    ]
    taken = {(row["node_id"], row["input_name"]) for row in found}
    names = {row["name"] for row in found}
    for class_type, proposals in _PROPOSED.items():
        nodes = [(nid, node) for nid, node in _nodes(graph) if node.get("class_type") == class_type]
        for n, (node_id, node) in enumerate(nodes, start=1):
            for input_name, base, optional in proposals:
                name = _numbered(base, n, len(nodes))
                if (node_id, input_name) in taken or name in names or not _literal(node, input_name):
                    continue
                found.append({"name": name, "node_id": node_id, "input_name": input_name,
                              "group": "basic", "optional": optional})
                names.add(name)
    return found


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
        try:
            validate_slug(name)
        except ValidationError:
            _add(errors, "bindings", _("'%(name)s' is not a valid input name (letters, digits, - and _).")
                 % {"name": name})
            continue
        if name in REQUEST_FIELDS.values() or name in ("inputs", "template", "callback_url"):
            _add(errors, "bindings", _("'%(name)s' is a request field of its own: name the input otherwise.")
                 % {"name": name})
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
        elif info and node.get("class_type") in info:
            raw = class_inputs(info[node["class_type"]]).get(input_name)
            if raw is not None and spec_from(raw, class_type=node["class_type"], input_name=input_name) is None:
                _add(errors, node_id, _("%(name)s is bound to input '%(input)s', which takes no value users can set.")
                     % {"name": name, "input": input_name})
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


def template_specs_refresh(*, template: WorkflowTemplate, object_info: dict) -> int:
    """Store what a backend's /object_info says of each input (type, limits, choices), so
    forms and checks follow the servers that run the template. Returns rows changed."""
    graph = template.graph if isinstance(template.graph, dict) else {}
    changed = 0
    for row in template.input_list:
        node = graph.get(row.node_id)
        class_type = str(node.get("class_type", "")) if isinstance(node, dict) else ""
        raw = class_inputs(object_info.get(class_type)).get(row.input_name)
        if raw and list(raw) != row.spec:
            TemplateInput.objects.filter(pk=row.pk).update(spec=list(raw))
            changed += 1
    return changed


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
    proposed = inputs_detect(graph) if bindings is None else rows_from_bindings(bindings)
    if bindings is None:
        bindings = {row["name"]: [row["node_id"], row["input_name"]] for row in proposed}
    if kind is None:
        kind = WorkflowTemplate.KIND_IMG2IMG if "image" in bindings else WorkflowTemplate.KIND_TXT2IMG
    # Only ask a backend about a graph that could be valid at all.
    well_formed = isinstance(graph, dict) and bool(graph) and not is_ui_format(graph)
    object_info = _object_info_for_import(backend) if well_formed else {}
    errors.update(template_validate(graph=graph, bindings=bindings, object_info=object_info, kind=kind))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        template = WorkflowTemplate.objects.create(
            name=name, slug=slug, kind=kind, graph=graph, description=description, enabled=True,
            is_default=False, builtin=False,
        )
        template_inputs_create(template=template, rows=proposed, object_info=object_info, graph_defaults=True)
    return template


def rows_from_bindings(bindings: Any) -> list[dict]:
    """Input rows (name, node_id, input_name, group, optional) for a bindings object."""
    return [
        {"name": name, "node_id": str(target[0]), "input_name": str(target[1]), "optional": False,
         "group": "advanced" if name in ("seed", "steps", "cfg", "sampler", "scheduler") else "basic"}
        for name, target in (bindings.items() if isinstance(bindings, dict) else [])
        if isinstance(target, (list, tuple)) and len(target) == 2
    ]


def template_inputs_create(
    *, template: WorkflowTemplate, rows: list[dict], object_info: dict | None = None, graph_defaults: bool = False
) -> list[TemplateInput]:
    """Store a template's inputs, each with ComfyUI's spec of it (from `object_info`, else
    the core nodes' known specs). `graph_defaults`: Easel's parameters default to the
    graph's own values (an imported template's values are the defaults its tasks get)."""
    graph = template.graph
    created = []
    for order, row in enumerate(rows):
        class_type = str(graph[row["node_id"]].get("class_type", ""))
        if graph_defaults and row["name"] in GRAPH_DEFAULTS:
            row = {**row, "default": _graph_value(graph, row["node_id"], row["input_name"])}
        raw = class_inputs(object_info.get(class_type)).get(row["input_name"]) if object_info else None
        created.append(TemplateInput.objects.create(
            template=template, order=order, spec=list(raw or known_spec(class_type, row["input_name"])), **row
        ))
    return created


# --- inputs as forms and clients see them -------------------------------------------


@dataclass(frozen=True)
class Field:
    """One input of a template, resolved: what pages, the API and the service use."""

    name: str
    label: str
    help_text: str
    group: str
    spec: Spec
    default: Any
    optional: bool
    node_id: str
    input_name: str

    @property
    def builtin(self) -> bool:
        return self.name in PARAMETER_NAMES

    @property
    def request_field(self) -> str:
        """Where a request carries it: a top-level field for Easel's parameters."""
        return REQUEST_FIELDS.get(self.name, self.name)


def input_label(row: TemplateInput) -> str:
    if row.label:
        return shipped_text(row.label)
    return str(PARAMETER_LABELS.get(row.name) or row.name.replace("_", " ").capitalize())


def _studio_spec(name: str, spec: Spec) -> Spec:
    """Easel's own parameters keep the studio's bounds too (generation.limits)."""
    bounds = studio_ranges().get(name)
    if bounds is not None and spec.numeric:
        low = bounds.low if spec.minimum is None else max(spec.minimum, bounds.low)
        high = bounds.high if spec.maximum is None else min(spec.maximum, bounds.high)
        return replace(spec, minimum=low, maximum=high, step=spec.step or bounds.step)
    if name in ("sampler", "scheduler"):
        known = studio_choices()[name]
        return replace(spec, kind=kinds.CHOICE, choices=tuple(c for c in spec.choices if c in known) or tuple(known))
    if name == "checkpoint":
        return replace(spec, kind=kinds.FILE, file_kind="checkpoint")
    if name == "image":
        return replace(spec, kind=kinds.IMAGE)
    return spec


def _graph_value(graph: dict, node_id: str, input_name: str) -> Any:
    node = graph.get(node_id) if isinstance(graph, dict) else None
    value = _inputs(node).get(input_name) if isinstance(node, dict) else None
    return None if is_link(value) else value


def row_spec(row: TemplateInput, graph: dict) -> Spec:
    """The row's Spec: ComfyUI's stored spec, Easel's bounds for its own parameters, then staff's narrowing."""
    node = graph.get(row.node_id) if isinstance(graph, dict) else None
    class_type = str(node.get("class_type", "")) if isinstance(node, dict) else ""
    raw = row.spec or known_spec(class_type, row.input_name)
    spec = spec_from(raw, class_type=class_type, input_name=row.input_name)
    if spec is None:
        # A custom node's input with no known spec: typed by the graph's own value.
        value = _graph_value(graph, row.node_id, row.input_name)
        kind = {bool: kinds.BOOLEAN, int: kinds.INT, float: kinds.FLOAT}.get(type(value), kinds.STRING)
        spec = Spec(kind)
    if row.name in PARAMETER_NAMES:
        spec = _studio_spec(row.name, spec)
    try:
        return narrow(spec, minimum=row.minimum, maximum=row.maximum, step=row.step)
    except ValueError:
        return spec  # the admin refuses such limits; a stored one never widens ComfyUI's


def template_fields(template: WorkflowTemplate) -> list[Field]:
    """Every input of the template, in order, with its spec and default (the row's
    default; for a custom input else the graph's literal value; none for uploads and
    optional files)."""
    kept = template.__dict__.get(_KEPT_FIELDS)
    if kept is not None:
        return list(kept)
    graph = template.graph if isinstance(template.graph, dict) else {}
    fields = []
    for row in template.input_list:
        spec = row_spec(row, graph)
        default = row.default
        # Easel's own parameters default to the row's value only, so the checkpoint's
        # defaults apply after it; a custom input runs with the graph's own value.
        if default is None and not row.optional and spec.kind not in kinds.UPLOAD_KINDS and not (
            row.name in PARAMETER_NAMES
        ):
            default = _graph_value(graph, row.node_id, row.input_name)
            if spec.kind == kinds.FILE:
                default = None  # the author's file is not a choice the studio makes
        fields.append(Field(
            name=row.name, label=input_label(row), help_text=shipped_text(row.help_text), group=row.group,
            spec=spec, default=default, optional=row.optional, node_id=row.node_id, input_name=row.input_name,
        ))
    return fields


_KEPT_FIELDS = "_easel_kept_fields"


def template_fields_keep(template: WorkflowTemplate, fields: tuple[Field, ...] | None = None) -> None:
    """Work out the template's fields once for this instance and every shallow copy of it
    (models_catalog.remembered hands out copies that share its graph and inputs, which
    nobody changes): every create asks for them (a tenth of a create's CPU). `fields`:
    worked out already, for another instance of the same version of the template."""
    template.__dict__[_KEPT_FIELDS] = tuple(template_fields(template)) if fields is None else fields


def template_schema(template: WorkflowTemplate, *, file_choices=None) -> dict:
    """The template's inputs as a JSON Schema (draft 2020-12) of the create request:
    Easel's parameters as top-level properties, custom inputs under `inputs`.
    `file_choices(kind) -> [(file name, title)]` lists the catalog's usable files."""
    top: dict[str, dict] = {}
    custom: dict[str, dict] = {}
    required_top, required_custom = [], []
    for field in template_fields(template):
        prop = _property(field, file_choices)
        (top if field.builtin else custom)[field.request_field] = prop
        if field.spec.kind in kinds.UPLOAD_KINDS and not field.optional or field.name == "prompt":
            (required_top if field.builtin else required_custom).append(field.request_field)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {"template": {"const": template.slug}, **top}, "required": required_top,
    }
    if custom:
        schema["properties"]["inputs"] = {
            "type": "object", "properties": custom, "required": required_custom, "additionalProperties": False,
        }
    return schema


def _property(field: Field, file_choices) -> dict:
    spec = field.spec
    prop: dict[str, Any] = {"title": field.label, "x-easel-group": field.group, "x-easel-kind": spec.kind}
    if field.help_text:
        prop["description"] = field.help_text
    if spec.kind in (kinds.INT, kinds.FLOAT):
        prop["type"] = "integer" if spec.kind == kinds.INT else "number"
        for key, value in (("minimum", spec.minimum), ("maximum", spec.maximum)):
            if value is not None:
                prop[key] = int(value) if spec.kind == kinds.INT else value
        if spec.step:
            prop["x-easel-step"] = spec.step
    elif spec.kind == kinds.BOOLEAN:
        prop["type"] = "boolean"
    elif spec.kind == kinds.STRING:
        prop["type"] = "string"
        if spec.multiline:
            prop["x-easel-multiline"] = True
    elif spec.kind == kinds.CHOICE:
        prop.update(type="string", enum=list(spec.choices))
    elif spec.kind == kinds.FILE:
        listed = list(file_choices(spec.file_kind)) if file_choices else []
        values = [name for name, _title in listed]
        prop.update(type=["string", "null"] if field.optional else "string", enum=values + ([None] if field.optional else []))
        prop["x-easel-file-kind"] = spec.file_kind
        prop["x-easel-titles"] = {name: title for name, title in listed}
    elif spec.kind in kinds.UPLOAD_KINDS:
        prop["type"] = "integer"
        prop["description"] = (field.help_text + " " if field.help_text else "") + _(
            "The id of a picture uploaded to /api/v1/uploads."
        )
    if field.default is not None:
        prop["default"] = field.default
    return prop


def template_parameters(template: WorkflowTemplate, **_ignored) -> list[dict]:
    """Easel's own parameters a template takes, in the list shape the templates API has
    always returned (name, type, default, required, node, input, min/max/step, choices)."""
    names = {kinds.INT: "integer", kinds.FLOAT: "float", kinds.STRING: "string", kinds.BOOLEAN: "boolean",
             kinds.CHOICE: "choice", kinds.FILE: "checkpoint", kinds.IMAGE: "image"}
    params = []
    for field in template_fields(template):
        if not field.builtin:
            continue
        spec = field.spec
        item: dict[str, Any] = {
            "name": field.name, "node": field.node_id, "input": field.input_name,
            "required": field.name == "image", "type": names.get(spec.kind, "string"), "default": field.default,
        }
        if spec.numeric:
            item.update(min=spec.minimum, max=spec.maximum)
            if spec.step:
                item["step"] = spec.step
        elif spec.kind == kinds.CHOICE:
            item["choices"] = list(spec.choices)
        elif spec.kind == kinds.STRING:
            item["multiline"] = spec.multiline
        params.append(item)
    return params


def passthrough(class_type: str) -> dict[int, str]:
    """For leaving a node out: output index → the input of the same type that passes
    through (LoraLoader: MODEL from model, CLIP from clip). From ComfyUI 0.3.64's specs
    of the core nodes; {} for a class Easel does not know."""
    info = NODE_SPECS.get(class_type) or {}
    by_type: dict[str, str] = {}
    for name, raw in class_inputs(info).items():
        if isinstance(raw, list) and raw and isinstance(raw[0], str):
            by_type.setdefault(raw[0], name)
    return {i: by_type[t] for i, t in enumerate(info.get("output") or []) if t in by_type}


def task_graph(template: WorkflowTemplate, values: dict) -> dict:
    """The graph of one task: each value written where its input goes; an optional
    input left empty (None) takes its node out (`generation.comfy.bypass`). Raises
    BindingError when the template and graph do not fit."""
    rows = {row.name: row for row in template.input_list}
    graph = template.graph
    for name, value in values.items():
        row = rows.get(name)
        if row is not None and row.optional and value is None and row.node_id in graph:
            graph = bypass(graph, row.node_id, passthrough(str(graph[row.node_id].get("class_type", ""))))
    present = {name: value for name, value in values.items()
               if name in rows and value is not None and rows[name].node_id in graph}
    return render_workflow(graph, template.bindings, present)
