"""What a template input takes, and the one check of a value against it.

A template input is a literal input of the graph ([node_id, input_name]) that users
set. Its type and limits come from ComfyUI's own `/object_info` spec of that input
(`spec_from_object_info`): INT / FLOAT with min, max and step; STRING (multiline or
not); BOOLEAN; a combo with its choices; a combo that lists server files (checkpoints,
LoRAs, VAEs, upscale models, …: `models_catalog.files.file_kind`) becomes a pick-list of
the catalog's entries of that kind; `LoadImage`'s image an uploaded picture and
`LoadImageMask`'s a mask drawn on the page. Staff may narrow the limits (`narrow`),
never widen ComfyUI's. `value_clean` checks one value against the spec: pages, the API
and the service all call it, so no two of them can disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from django.utils.translation import gettext as _

from .files import file_kind

INT, FLOAT, STRING, BOOLEAN, CHOICE, FILE, IMAGE, MASK = (
    "int", "float", "string", "boolean", "choice", "file", "image", "mask",
)
KINDS = (INT, FLOAT, STRING, BOOLEAN, CHOICE, FILE, IMAGE, MASK)
# Inputs whose value is an upload (a SourceImage id), sent to ComfyUI before the prompt.
UPLOAD_KINDS = (IMAGE, MASK)
# ComfyUI nodes whose `image` combo is an uploaded picture, and which of them read a mask.
IMAGE_LOADERS = {"LoadImage": IMAGE, "LoadImageMask": MASK}


@dataclass(frozen=True)
class Spec:
    """One input's type and limits (None: no limit)."""

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    multiline: bool = False
    choices: tuple = ()
    file_kind: str = ""
    default: Any = None

    @property
    def numeric(self) -> bool:
        return self.kind in (INT, FLOAT)


def _options(raw: list) -> dict:
    return raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}


def spec_from(raw: Any, *, class_type: str, input_name: str) -> Spec | None:
    """The Spec of an input from its /object_info entry ([type, options]); None when
    the entry is not one Easel can offer (a link type such as MODEL or LATENT)."""
    if not isinstance(raw, (list, tuple)) or not raw:
        return None
    head, options = raw[0], _options(list(raw))
    if class_type in IMAGE_LOADERS and input_name == "image":
        return Spec(IMAGE_LOADERS[class_type])
    choices = None
    if isinstance(head, list):
        choices = head
    elif head == "COMBO":
        choices = options.get("options") or []
    if choices is not None:
        kind_of_file = file_kind(class_type, input_name)
        if kind_of_file:
            return Spec(FILE, file_kind=kind_of_file)
        return Spec(CHOICE, choices=tuple(str(c) for c in choices), default=options.get("default"))
    if head in ("INT", "FLOAT"):
        return Spec(
            INT if head == "INT" else FLOAT,
            minimum=options.get("min"), maximum=options.get("max"),
            step=options.get("step", 1 if head == "INT" else None), default=options.get("default"),
        )
    if head == "STRING":
        return Spec(STRING, multiline=bool(options.get("multiline")), default=options.get("default"))
    if head == "BOOLEAN":
        return Spec(BOOLEAN, default=options.get("default"))
    return None


def class_inputs(info: Any) -> dict:
    """Every input of a node class's /object_info entry, required and optional."""
    sections = info.get("input") if isinstance(info, dict) else None
    sections = sections if isinstance(sections, dict) else {}
    return {**(sections.get("required") or {}), **(sections.get("optional") or {})}


def spec_from_object_info(object_info: dict, class_type: str, input_name: str) -> Spec | None:
    raw = class_inputs(object_info.get(class_type)).get(input_name)
    return spec_from(raw, class_type=class_type, input_name=input_name)


def narrow(spec: Spec, *, minimum=None, maximum=None, step=None) -> Spec:
    """The spec with staff's tighter limits. Raises ValueError when a limit would widen
    ComfyUI's (or is not a number the input can take)."""
    if minimum is None and maximum is None and step is None:
        return spec
    if not spec.numeric:
        raise ValueError(_("Only numbers have limits to narrow."))
    if minimum is not None and spec.minimum is not None and minimum < spec.minimum:
        raise ValueError(_("The minimum cannot be below ComfyUI's %(n)s.") % {"n": spec.minimum})
    if maximum is not None and spec.maximum is not None and maximum > spec.maximum:
        raise ValueError(_("The maximum cannot be above ComfyUI's %(n)s.") % {"n": spec.maximum})
    low = minimum if minimum is not None else spec.minimum
    high = maximum if maximum is not None else spec.maximum
    if low is not None and high is not None and low > high:
        raise ValueError(_("The minimum is above the maximum."))
    if step is not None and (step <= 0 or (spec.step and step < spec.step)):
        raise ValueError(_("The step cannot be finer than ComfyUI's %(n)s.") % {"n": spec.step})
    if spec.kind == INT:
        low, high = (None if v is None else int(v) for v in (low, high))
        step = None if step is None else max(1, int(step))
    return replace(spec, minimum=low, maximum=high, step=step if step is not None else spec.step)


def value_clean(spec: Spec, value: Any, *, choices=None, strict: bool = False) -> tuple[Any, list[str]]:
    """(the value as the graph takes it, problems). `choices` overrides the spec's list
    (the catalog's usable files for a file input). `strict` (a JSON body): a number must
    be a JSON number, not a string; a form's text is converted."""
    if spec.kind in (INT, FLOAT):
        if isinstance(value, bool) or (strict and not isinstance(value, (int, float))):
            return value, [_("Must be a number.")]
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value, [_("Must be a number.")]
        if number != number or number in (float("inf"), float("-inf")):
            return value, [_("Must be a number.")]
        if spec.kind == INT:
            if number != int(number):
                return value, [_("Must be a whole number.")]
            number = int(number)
        if spec.minimum is not None and number < spec.minimum:
            return value, [_("Must be at least %(n)s.") % {"n": _shown(spec.minimum)}]
        if spec.maximum is not None and number > spec.maximum:
            return value, [_("Must be at most %(n)s.") % {"n": _shown(spec.maximum)}]
        return number, []
    if spec.kind == BOOLEAN:
        if isinstance(value, bool):
            return value, []
        if not strict and str(value).lower() in ("1", "true", "on", "yes", "0", "false", "off", "no", ""):
            return str(value).lower() in ("1", "true", "on", "yes"), []
        return value, [_("Must be true or false.")]
    if spec.kind == STRING:
        if not isinstance(value, str):
            if strict:
                return value, [_("Must be text.")]
            value = "" if value is None else str(value)
        return value, []
    if spec.kind in (CHOICE, FILE):
        allowed = list(choices if choices is not None else spec.choices)
        if not isinstance(value, str) or value not in allowed:
            if spec.kind == FILE:
                return value, [_("Not available: %(value)s.") % {"value": value}]
            return value, [_("Choose one of: %(choices)s.") % {"choices": ", ".join(allowed[:20])}]
        return value, []
    if spec.kind in UPLOAD_KINDS:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, [_("Must be the id of an uploaded picture.")]
        return value, []
    return value, []


def _shown(number) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
