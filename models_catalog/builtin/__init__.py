"""Workflow templates that ship with Easel."""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

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


def txt2img_graph() -> dict:
    return json.loads((HERE / "txt2img_api.json").read_text())


def img2img_graph() -> dict:
    return json.loads((HERE / "img2img_api.json").read_text())


def builtin_templates() -> list[dict]:
    """The shipped templates, as field values."""
    return [
        {
            "slug": "txt2img-basic",
            "name": "Text to image",
            "kind": "txt2img",
            "graph": txt2img_graph(),
            "bindings": TXT2IMG_BINDINGS,
            "description": "Checkpoint, prompt and negative prompt, sampled from an empty latent.",
        },
        {
            "slug": "img2img-basic",
            "name": "Image to image",
            "kind": "img2img",
            "graph": img2img_graph(),
            "bindings": IMG2IMG_BINDINGS,
            "description": "Starts from your picture; denoise sets how far the result may move away from it.",
        },
    ]


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
