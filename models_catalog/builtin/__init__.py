"""Workflow templates that ship with Easel, and the other words Easel writes into the catalog.

These texts are stored in the database in English (a row has one name, whoever reads
it) and shown in the reader's language: `shipped_text` passes them through gettext,
only while a row still holds exactly what Easel wrote. Staff who rename or describe a
row in their own words see their words, as written. The msgids are marked with
`gettext_noop` here, where they are defined, so makemessages keeps them.
"""
import json
from pathlib import Path

from django.utils.translation import gettext, gettext_noop

HERE = Path(__file__).resolve().parent

# What the checkpoint sync writes on the demo engine's models (models_catalog.services),
# so nobody mistakes a demo "model" for AI.
DEMO_DESCRIPTION = gettext_noop("Built-in demo engine: labelled placeholder pictures, no GPU, not AI output.")
# The same for the demo engine's LoRAs, VAE and upscale model (models_catalog.ModelFile):
# a name to try templates with, no weights behind it.
DEMO_FILE_DESCRIPTION = gettext_noop("Built-in demo engine: a name to try templates with, no weights, not AI.")

# The inputs of each shipped template: (name, node id, input name, and optionally
# group / label / default / limits / optional). Node ids are those of the graphs beside
# this file; txt2img_api.json and img2img_api.json follow ComfyUI's default workflow
# (tests/fixtures/comfyui/workflow_*_api.json). Easel's own parameters (prompt, seed, …)
# take their labels from models_catalog.templates; the others are labelled here.
BASIC, ADVANCED = "basic", "advanced"


def _i(name, node, input_name, group=BASIC, **extra) -> dict:
    return {"name": name, "node_id": node, "input_name": input_name, "group": group, **extra}


def _sampling(node="3") -> list[dict]:
    return [
        _i("seed", node, "seed", ADVANCED), _i("steps", node, "steps", ADVANCED), _i("cfg", node, "cfg", ADVANCED),
        _i("sampler", node, "sampler_name", ADVANCED), _i("scheduler", node, "scheduler", ADVANCED),
    ]


def _prompts(checkpoint="4", positive="6", negative="7") -> list[dict]:
    return [
        _i("checkpoint", checkpoint, "ckpt_name"), _i("prompt", positive, "text"),
        _i("negative_prompt", negative, "text"),
    ]


def _canvas(node="5") -> list[dict]:
    return [_i("width", node, "width"), _i("height", node, "height"), _i("batch_size", node, "batch_size")]


LORA_SLOTS = 4
LORA_LABELS = (gettext_noop("LoRA %(n)s"), gettext_noop("LoRA %(n)s strength"), gettext_noop("LoRA %(n)s CLIP strength"))


def _loras() -> list[dict]:
    rows = []
    for n, node in enumerate(("10", "11", "12", "13"), start=1):
        rows += [
            _i(f"lora_{n}", node, "lora_name", optional=True, default=None, label=LORA_LABELS[0], label_n=n),
            _i(f"lora_{n}_strength", node, "strength_model", default=1.0, minimum=-4.0, maximum=4.0,
               label=LORA_LABELS[1], label_n=n),
            _i(f"lora_{n}_clip_strength", node, "strength_clip", ADVANCED, default=1.0, minimum=-4.0, maximum=4.0,
               label=LORA_LABELS[2], label_n=n),
        ]
    return rows


INPUTS = {
    "txt2img-basic": [*_prompts(), *_canvas(), *_sampling()],
    "img2img-basic": [
        _i("image", "1", "image"), _i("denoise", "3", "denoise"), *_prompts(), *_sampling(),
    ],
    "txt2img-loras": [*_prompts(), *_loras(), *_canvas(), *_sampling()],
    "hires-fix": [
        *_prompts(), *_canvas(),
        _i("hires_scale", "10", "scale_by", default=1.5, minimum=1.0, maximum=4.0,
           label=gettext_noop("Upscale by"), help_text=gettext_noop("How much larger the second pass draws.")),
        _i("hires_denoise", "11", "denoise", default=0.5,
           label=gettext_noop("Second pass denoise"),
           help_text=gettext_noop("How far the second pass may move away from the first picture.")),
        _i("hires_steps", "11", "steps", ADVANCED, default=10, maximum=150, label=gettext_noop("Second pass steps")),
        *_sampling(),
    ],
    "upscale": [
        _i("image", "1", "image"),
        _i("upscale_model", "2", "model_name", label=gettext_noop("Upscale model")),
        _i("scale_by", "4", "scale_by", ADVANCED, default=1.0, minimum=0.25, maximum=4.0,
           label=gettext_noop("Resize after upscaling"),
           help_text=gettext_noop("1 keeps the model's size; 0.5 halves it.")),
    ],
    "inpaint": [
        _i("image", "1", "image"),
        _i("mask", "5", "image", label=gettext_noop("Mask"),
           help_text=gettext_noop("Paint the area to redraw.")),
        *_prompts(),
        _i("grow_mask_by", "2", "grow_mask_by", ADVANCED, label=gettext_noop("Grow the mask by (pixels)")),
        *_sampling(),
    ],
}

# Each built-in template's name and description (slug → (name, description)).
TEXTS = {
    "txt2img-basic": (
        gettext_noop("Text to image"),
        gettext_noop("Checkpoint, prompt and negative prompt, sampled from an empty latent."),
    ),
    "img2img-basic": (
        gettext_noop("Image to image"),
        gettext_noop("Starts from your picture; denoise sets how far the result may move away from it."),
    ),
    "txt2img-loras": (
        gettext_noop("Text to image with LoRAs"),
        gettext_noop("Up to four LoRAs, each with its strength, on top of the checkpoint."),
    ),
    "hires-fix": (
        gettext_noop("Hires fix"),
        gettext_noop("Draws the picture, enlarges it and draws it again for sharper detail."),
    ),
    "upscale": (
        gettext_noop("Upscale an image"),
        gettext_noop("Enlarges a picture with an upscale model."),
    ),
    "inpaint": (
        gettext_noop("Inpaint"),
        gettext_noop("Paint a mask over your picture: the painted area is drawn again, the rest is kept."),
    ),
}
# slug → (graph file, kind)
GRAPHS = {
    "txt2img-basic": ("txt2img_api.json", "txt2img"),
    "img2img-basic": ("img2img_api.json", "img2img"),
    "txt2img-loras": ("txt2img_loras_api.json", "txt2img"),
    "hires-fix": ("hires_fix_api.json", "txt2img"),
    "upscale": ("upscale_api.json", "img2img"),
    "inpaint": ("inpaint_api.json", "img2img"),
}
# The first two shipped before template inputs existed; early migrations stored their
# bindings (parameter → [node, input]) in a field since converted to inputs.
LEGACY = ("txt2img-basic", "img2img-basic")


# The /object_info entries (inputs without tooltips, outputs) of the node classes the
# shipped graphs use, from a real ComfyUI 0.3.64 (tests/fixtures/comfyui/object_info.json),
# with the lists of server files left empty: what a template input is, with no backend asked.
NODE_SPECS: dict = json.loads((HERE / "node_specs.json").read_text())


def known_spec(class_type: str, input_name: str) -> list:
    """ComfyUI 0.3.64's [type, options] of one input of a core node; [] when unknown."""
    return list((NODE_SPECS.get(class_type, {}).get("input", {}).get("required") or {}).get(input_name) or [])


def graph_of(slug: str) -> dict:
    return json.loads((HERE / GRAPHS[slug][0]).read_text())


def txt2img_graph() -> dict:
    return graph_of("txt2img-basic")


def img2img_graph() -> dict:
    return graph_of("img2img-basic")


def bindings_of(slug: str) -> dict[str, list]:
    return {row["name"]: [row["node_id"], row["input_name"]] for row in INPUTS[slug]}


TXT2IMG_BINDINGS = bindings_of("txt2img-basic")
IMG2IMG_BINDINGS = bindings_of("img2img-basic")


def builtin_templates() -> list[dict]:
    """The shipped templates, as field values (with their inputs)."""
    return [
        {
            "slug": slug, "name": TEXTS[slug][0], "kind": kind, "graph": graph_of(slug),
            "inputs": INPUTS[slug], "description": TEXTS[slug][1],
        }
        for slug, (_, kind) in GRAPHS.items()
    ]


def input_rows(slug: str) -> list[dict]:
    """TemplateInput field values of a shipped template, in order."""
    rows = []
    graph = graph_of(slug)
    for order, row in enumerate(INPUTS[slug]):
        row = dict(row)
        row["spec"] = known_spec(graph[row["node_id"]]["class_type"], row["input_name"])
        n = row.pop("label_n", None)
        # A numbered label ("LoRA 2") is stored filled in, and shown translated through
        # its pattern (SHIPPED_LABELS below).
        if n is not None:
            row["label"] = row["label"] % {"n": n}
        rows.append({**row, "order": order})
    return rows


SHIPPED_TEXTS = frozenset({
    DEMO_DESCRIPTION, DEMO_FILE_DESCRIPTION, *(text for pair in TEXTS.values() for text in pair),
    *(row[key] for rows in INPUTS.values() for row in rows for key in ("label", "help_text")
      if key in row and "label_n" not in row),
})
# Numbered labels as stored ("LoRA 2 strength") → (pattern, number).
SHIPPED_LABELS = {
    pattern % {"n": n}: (pattern, n) for pattern in LORA_LABELS for n in range(1, LORA_SLOTS + 1)
}


def shipped_text(stored: str) -> str:
    """A catalog text in the reader's language when Easel wrote it; staff's words as written."""
    if stored in SHIPPED_LABELS:
        pattern, n = SHIPPED_LABELS[stored]
        return gettext(pattern) % {"n": n}
    return gettext(stored) if stored in SHIPPED_TEXTS else stored


def ensure_builtin_templates(WorkflowTemplate) -> None:
    """Create or refresh the built-in templates (used by data migrations and tests).

    Idempotent, and safe to run again from a later migration: the shipped graph and
    where each input goes are refreshed, but what staff decide (name, description,
    enabled, which template is the default, an input's label, default and limits) is
    only set when the row is first created. The model may be historical: before
    template inputs existed (it still has a bindings field) only the first two
    templates are written, with their bindings in that field.
    """
    field_names = {f.name for f in WorkflowTemplate._meta.get_fields()}
    legacy = "bindings" in field_names
    TemplateInput = None if legacy else WorkflowTemplate._meta.get_field("inputs").related_model
    for spec in builtin_templates():
        if legacy and spec["slug"] not in LEGACY:
            continue
        refreshed = {"kind": spec["kind"], "graph": spec["graph"], "builtin": True}
        if legacy:
            refreshed["bindings"] = bindings_of(spec["slug"])
        # Staff may already have picked their own default for this kind; only the first
        # two templates are ever a kind's default.
        has_default = spec["slug"] not in LEGACY or WorkflowTemplate.objects.filter(
            kind=spec["kind"], is_default=True
        ).exclude(slug=spec["slug"]).exists()
        created = {**refreshed, "name": spec["name"], "enabled": True, "is_default": not has_default}
        if "description" in field_names:
            created["description"] = spec["description"]
        template, _ = WorkflowTemplate.objects.update_or_create(
            slug=spec["slug"], defaults=refreshed, create_defaults=created
        )
        # A row made by an early migration (before the description field existed) gets
        # the shipped description later; one staff have written is kept.
        if "description" in field_names and not template.description:
            WorkflowTemplate.objects.filter(pk=template.pk).update(description=spec["description"])
        if legacy:
            continue
        existing = {row.name: row for row in TemplateInput.objects.filter(template=template)}
        for row in input_rows(spec["slug"]):
            current = existing.get(row["name"])
            if current is None:
                TemplateInput.objects.create(template=template, **row)
            else:
                TemplateInput.objects.filter(pk=current.pk).update(
                    node_id=row["node_id"], input_name=row["input_name"], spec=row["spec"]
                )
