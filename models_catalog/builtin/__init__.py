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

# Where each Easel parameter goes in the txt2img graph (node ids from ComfyUI's
# default workflow, as captured in tests/fixtures/comfyui/workflow_txt2img_api.json).
TXT2IMG_BINDINGS = {
    "checkpoint": ["4", "ckpt_name"],
    "prompt": ["6", "text"],
    "negative_prompt": ["7", "text"],
    "width": ["5", "width"],
    "height": ["5", "height"],
    "batch_size": ["5", "batch_size"],
    "seed": ["3", "seed"],
    "steps": ["3", "steps"],
    "cfg": ["3", "cfg"],
    "sampler": ["3", "sampler_name"],
    "scheduler": ["3", "scheduler"],
}

# The img2img graph of tests/fixtures/comfyui/workflow_img2img_api.json: LoadImage(1) →
# VAEEncode(2) → KSampler(3). The picture's size comes from the source image, so width,
# height and batch size are not bound (the graph has no EmptyLatentImage).
IMG2IMG_BINDINGS = {
    "checkpoint": ["4", "ckpt_name"],
    "prompt": ["6", "text"],
    "negative_prompt": ["7", "text"],
    "seed": ["3", "seed"],
    "steps": ["3", "steps"],
    "cfg": ["3", "cfg"],
    "sampler": ["3", "sampler_name"],
    "scheduler": ["3", "scheduler"],
    "denoise": ["3", "denoise"],
    "image": ["1", "image"],
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
}


def txt2img_graph() -> dict:
    return json.loads((HERE / "txt2img_api.json").read_text())


def img2img_graph() -> dict:
    return json.loads((HERE / "img2img_api.json").read_text())


def builtin_templates() -> list[dict]:
    """The shipped templates, as field values."""
    return [
        {
            "slug": "txt2img-basic",
            "name": TEXTS["txt2img-basic"][0],
            "kind": "txt2img",
            "graph": txt2img_graph(),
            "bindings": TXT2IMG_BINDINGS,
            "description": TEXTS["txt2img-basic"][1],
        },
        {
            "slug": "img2img-basic",
            "name": TEXTS["img2img-basic"][0],
            "kind": "img2img",
            "graph": img2img_graph(),
            "bindings": IMG2IMG_BINDINGS,
            "description": TEXTS["img2img-basic"][1],
        },
    ]


SHIPPED_TEXTS = frozenset({DEMO_DESCRIPTION, DEMO_FILE_DESCRIPTION, *(text for pair in TEXTS.values() for text in pair)})


def shipped_text(stored: str) -> str:
    """A catalog text in the reader's language when Easel wrote it; staff's words as written."""
    return gettext(stored) if stored in SHIPPED_TEXTS else stored


def ensure_builtin_templates(WorkflowTemplate) -> None:
    """Create or refresh the built-in templates (used by data migrations and tests).

    Idempotent, and safe to run again from a later migration: the shipped graph and
    bindings are refreshed, but what staff decide (name, description, enabled, which
    template is the default) is only set when the row is first created.
    `WorkflowTemplate` may be a historical model, so fields added later (description)
    are only written when the model has them.
    """
    field_names = {f.name for f in WorkflowTemplate._meta.get_fields()}
    for spec in builtin_templates():
        refreshed = {"kind": spec["kind"], "graph": spec["graph"], "bindings": spec["bindings"], "builtin": True}
        # Staff may already have picked their own default for this kind.
        has_default = WorkflowTemplate.objects.filter(kind=spec["kind"], is_default=True).exclude(
            slug=spec["slug"]
        ).exists()
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
