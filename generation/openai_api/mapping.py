"""An OpenAI images request, read and mapped onto Easel's create request.

- `model`: a checkpoint's name (or its ComfyUI file name), or an enabled template's slug;
  OpenAI's own names (`dall-e-2`, `dall-e-3`, `gpt-image-1`, …) and none at all mean the
  studio's default model. Anything else is a 404 `model_not_found`, as OpenAI answers.
- `size`: "WIDTHxHEIGHT" within the studio's bounds; "auto" or none: the model's default.
- `n`: the batch size, within the studio's bound.
- `response_format`: `url` (default, as dall-e's) or `b64_json`.
- What OpenAI accepts and Easel cannot honour (`quality`, `style`, `background`,
  `output_format`, `moderation`, …) is accepted and ignored; a stream is refused.

docs/openai.md is the user's version of this page.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from PIL import Image

from models_catalog import inputs as kinds
from models_catalog.models import WorkflowTemplate
from models_catalog.selectors import checkpoint_get_usable, template_get_enabled, template_list_enabled
from models_catalog.templates import template_fields

from ..gallery.uploads import CODE_TOO_LARGE, upload_decode
from ..limits import parameter_errors
from .errors import OpenAIError, model_not_found

# OpenAI's own image models: a client configured for OpenAI keeps working, on the default model.
OPENAI_MODEL_PREFIXES = ("dall-e", "gpt-image", "chatgpt-image")
RESPONSE_FORMATS = ("url", "b64_json")
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


@dataclass
class ImageRequest:
    """One OpenAI images request, parsed: what `create.openai_task_create` needs."""

    prompt: str
    model: str = ""  # as the client named it
    model_name: str = ""  # the checkpoint ("": the default)
    template: WorkflowTemplate | None = None  # None: the default template of the task's kind
    batch_size: int | None = None
    width: int | None = None
    height: int | None = None
    response_format: str = "url"
    user: str = ""
    # Edits: the picture (already at the size asked for) and Easel's mask (white: redraw).
    image: Image.Image | None = None
    mask: Image.Image | None = None
    mask_input: str = ""  # the template's mask input
    ignored: list[str] = field(default_factory=list)


def _text(data, name: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise OpenAIError(_("Missing required parameter: '%(name)s'.") % {"name": name}, param=name,
                              code="missing_required_parameter")
        return ""
    if not isinstance(value, str):
        raise OpenAIError(_("Invalid type for '%(name)s': expected a string.") % {"name": name}, param=name,
                          code="invalid_type")
    return value


def _count(data) -> int | None:
    value = data.get("n")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIError(_("Invalid type for 'n': expected an integer."), param="n", code="invalid_type")
    return value


def size_parse(value: str) -> tuple[int | None, int | None]:
    """(width, height) of "WIDTHxHEIGHT", or (None, None) for "auto" or nothing."""
    if value in ("", "auto"):
        return None, None
    match = _SIZE.fullmatch(value.strip().lower())
    if match is None:
        raise OpenAIError(
            _("Invalid size '%(size)s': use 'WIDTHxHEIGHT' (for example '512x512') or 'auto'.") % {"size": value},
            param="size", code="invalid_size",
        )
    width, height = int(match.group(1)), int(match.group(2))
    problems = parameter_errors({"width": width, "height": height})
    if problems:
        message = next(iter(problems.values()))[0]
        raise OpenAIError(_("Invalid size '%(size)s': %(problem)s") % {"size": value, "problem": message},
                          param="size", code="invalid_size")
    return width, height


def model_resolve(name: str) -> tuple[str, WorkflowTemplate | None]:
    """(checkpoint name, template) for OpenAI's `model`: see the module's docstring."""
    if not name or name.lower().startswith(OPENAI_MODEL_PREFIXES):
        return "", None
    checkpoint = checkpoint_get_usable(name=name)
    if checkpoint is not None:
        return checkpoint.name, None
    template = template_get_enabled(slug=name)
    if template is not None:
        return "", template
    raise model_not_found(name)


def _common(data) -> ImageRequest:
    if data.get("stream") in (True, "true", "True", "1"):
        raise OpenAIError(_("Streaming is not supported: leave 'stream' out or false."), param="stream",
                          code="unsupported_parameter")
    response_format = _text(data, "response_format") or "url"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(_("Invalid 'response_format': use 'url' or 'b64_json'."), param="response_format",
                          code="invalid_value")
    model = _text(data, "model")
    model_name, template = model_resolve(model)
    width, height = size_parse(_text(data, "size"))
    return ImageRequest(
        prompt=_text(data, "prompt", required=True), model=model, model_name=model_name, template=template,
        batch_size=_count(data), width=width, height=height, response_format=response_format,
        user=_text(data, "user"),
    )


def generation_request(data) -> ImageRequest:
    """`POST /images/generations` (a JSON object)."""
    if not hasattr(data, "get"):
        raise OpenAIError(_("The request body must be a JSON object."), code="invalid_request")
    return _common(data)


def _picture(file, *, param: str) -> Image.Image:
    try:
        # Judged by its content alone: OpenAI's clients name uploads loosely ("image.png"
        # for a JPEG), and the picture is stored under a name of Easel's anyway.
        return upload_decode(file=file, name="openai-upload")
    except ValidationError as exc:
        errors = exc.error_dict.get("image", []) if hasattr(exc, "error_dict") else []
        too_large = any(error.code == CODE_TOO_LARGE for error in errors)
        raise OpenAIError(exc.messages[0], status_code=413 if too_large else 400, param=param,
                          code="too_large" if too_large else "invalid_image") from exc


def mask_to_easel(mask: Image.Image) -> Image.Image:
    """OpenAI's mask (fully transparent where the picture is to be edited) as Easel's
    (white where it is redrawn, black elsewhere: LoadImageMask's red channel). A mask with
    no transparency at all is read as Easel's own kind: white redraws."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        redraw = mask.convert("RGBA").getchannel("A").point(lambda alpha: 255 if alpha < 128 else 0)
    else:
        redraw = mask.convert("L").point(lambda value: 255 if value >= 128 else 0)
    return redraw.convert("RGB")


def _mask_input(template: WorkflowTemplate) -> str:
    return next((f.name for f in template_fields(template) if f.spec.kind == kinds.MASK), "")


def _inpaint_template() -> WorkflowTemplate | None:
    return next((t for t in template_list_enabled(kind=WorkflowTemplate.KIND_IMG2IMG) if _mask_input(t)), None)


def _one_file(files, *names):
    for name in names:
        found = files.getlist(name) if hasattr(files, "getlist") else [files.get(name)]
        found = [f for f in found if f is not None]
        if found:
            return found[0]
    return None


def edit_request(data, files) -> ImageRequest:
    """`POST /images/edits` (multipart): without a mask an image-to-image task, with one an
    inpainting task. `size` scales the picture (and mask) to it; none keeps the picture's."""
    parsed = _common(data)
    image_file = _one_file(files, "image", "image[]")
    if image_file is None:
        raise OpenAIError(_("Missing required parameter: '%(name)s'.") % {"name": "image"}, param="image",
                          code="missing_required_parameter")
    mask_file = _one_file(files, "mask")
    template = parsed.template
    if template is not None and not template.takes_image:
        raise OpenAIError(_("The model '%(name)s' does not start from a picture: name a checkpoint or an "
                            "image-to-image template.") % {"name": parsed.model}, param="model",
                          code="invalid_value")
    if mask_file is not None:
        template = template or _inpaint_template()
        if template is None:
            raise OpenAIError(_("No inpainting template is enabled, so a mask cannot be used. Ask staff to "
                                "enable one."), param="mask", code="invalid_value")
        parsed.mask_input = _mask_input(template)
        if not parsed.mask_input:
            raise OpenAIError(_("The model '%(name)s' takes no mask.") % {"name": parsed.model}, param="mask",
                              code="invalid_value")
    parsed.template = template
    image = _picture(image_file, param="image")
    mask = None
    if mask_file is not None:
        with _picture(mask_file, param="mask") as raw:
            if raw.size != image.size:
                raise OpenAIError(
                    _("The mask is %(mask_width)s × %(mask_height)s pixels but the image is %(width)s × "
                      "%(height)s: they must have the same size.") % {
                        "mask_width": raw.width, "mask_height": raw.height, "width": image.width,
                        "height": image.height},
                    param="mask", code="invalid_value")
            mask = mask_to_easel(raw)
    if parsed.width is not None:
        size = (parsed.width, parsed.height)
        if image.size != size:
            image = image.resize(size, Image.LANCZOS)
            mask = mask.resize(size, Image.NEAREST) if mask is not None else None
        # The template draws at the picture's size: the size is not sent as well.
        parsed.width = parsed.height = None
    parsed.image, parsed.mask = image, mask
    return parsed
