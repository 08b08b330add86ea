"""Form widgets for the template inputs (LoRAs, hires fix, upscale, inpaint).

Every widget works without JavaScript (a plain number box, select, file input); the
scripts only add helpers on top (a slider, a filter box, a drop zone, a mask painter).
Their templates live in templates/generation/widgets/, their behaviour in
static/js/widgets.js and static/js/mask_editor.js (loaded by each widget's Media, so a
page showing the form puts `{{ form.media }}` in its scripts block), their looks in
static/css/easel.css. The words a script writes come from the widget's own markup
(data-* attributes rendered with {% translate %}), never from the script.

    RangeNumberWidget(minimum, maximum, step)   a number box plus a synced slider
    SearchableSelectWidget(threshold=8)         a select with a filter box when long
    LoraRowsField(choices, rows=4, ...)         up to N (LoRA, strength) rows
        -> [{"name": <choice value>, "strength": float}, ...] for the filled rows
    ImageDropWidget()                           a file input turned into a drop zone
    MaskEditorWidget(source="image")            a mask painted over that field's picture,
        sent as an ordinary PNG upload (white = painted, black = kept)
"""
from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from pathlib import Path

import django.forms
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.renderers import DjangoTemplates
from django.forms.widgets import Script
from django.utils.functional import cached_property
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

IMAGE_TYPES = "image/png,image/jpeg,image/webp"
WIDGETS_JS = Script("js/widgets.js", defer=True)
MASK_EDITOR_JS = Script("js/mask_editor.js", defer=True)

# The LoRA strength ComfyUI's LoraLoader takes; a form may narrow it, never widen it.
LORA_STRENGTH_MIN = -10.0
LORA_STRENGTH_MAX = 10.0
LORA_STRENGTH_STEP = 0.01
LORA_STRENGTH_DEFAULT = 1.0
LORA_ROWS = 4


class _WidgetRenderer(DjangoTemplates):
    """Django's own widget templates plus the project's templates/ folder.

    Django's default form renderer reads only django/forms/templates and the apps'
    template folders; the widget templates sit in the project's folder beside the pages,
    so these widgets render through this engine whatever FORM_RENDERER says."""

    @cached_property
    def engine(self):
        return self.backend({
            "APP_DIRS": True,
            "DIRS": [Path(django.forms.__file__).parent / "templates", Path(settings.BASE_DIR) / "templates"],
            "NAME": "easelwidgets",
            "OPTIONS": {},
        })


_renderer = _WidgetRenderer()


class _ProjectTemplates:
    """Render with the project's templates (see _WidgetRenderer)."""

    def _render(self, template_name, context, renderer=None):
        return mark_safe(_renderer.render(template_name, context))


def _number(value: float) -> str:
    """A bound as the browser's min/max/step attributes want it (no "1e-05", no "10.0")."""
    return format(Decimal(str(value)).normalize(), "f")


def _check_bounds(minimum: float, maximum: float, step: float) -> None:
    if not (math.isfinite(minimum) and math.isfinite(maximum) and math.isfinite(step)):
        raise ValueError("bounds must be finite numbers")
    if minimum >= maximum:
        raise ValueError(f"minimum {minimum} is not below maximum {maximum}")
    if step <= 0:
        raise ValueError(f"step {step} is not positive")


class RangeNumberWidget(_ProjectTemplates, forms.NumberInput):
    """A number box (the form's value) with a slider beside it, kept in sync by
    widgets.js. The slider is only a helper, hidden from assistive technology; without
    script the number box alone works."""

    template_name = "generation/widgets/range_number.html"

    def __init__(self, minimum: float, maximum: float, step: float = 1, attrs=None):
        _check_bounds(minimum, maximum, step)
        self.minimum, self.maximum, self.step = minimum, maximum, step
        super().__init__(attrs)

    @property
    def media(self):
        return forms.Media(js=[WIDGETS_JS])

    def narrow(self, minimum: float, maximum: float, step: float | None = None) -> None:
        """Offer a smaller range than the constructor's (the field still checks it)."""
        step = self.step if step is None else step
        _check_bounds(minimum, maximum, step)
        self.minimum, self.maximum, self.step = minimum, maximum, step

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"]["attrs"].update(
            min=_number(self.minimum), max=_number(self.maximum), step=_number(self.step))
        return context


class SearchableSelectWidget(_ProjectTemplates, forms.Select):
    """A select that widgets.js gives a filter box when it has more than `threshold`
    options; the filter only hides options, the select stays the form's value."""

    template_name = "generation/widgets/searchable_select.html"

    def __init__(self, attrs=None, choices=(), threshold: int = 8):
        super().__init__(attrs, choices)
        self.threshold = threshold

    @property
    def media(self):
        return forms.Media(js=[WIDGETS_JS])

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"]["threshold"] = self.threshold
        return context


class LoraRowsWidget(_ProjectTemplates, forms.MultiWidget):
    """`rows` pairs of (LoRA select, strength), posted as <name>_<i>_name and
    <name>_<i>_strength. Without script every row shows; with it, the empty rows hide
    behind an "Add a LoRA" button and each row gets a remove button."""

    template_name = "generation/widgets/lora_rows.html"

    def __init__(self, rows: int = LORA_ROWS, choices=(), minimum: float = LORA_STRENGTH_MIN,
                 maximum: float = LORA_STRENGTH_MAX, step: float = LORA_STRENGTH_STEP,
                 default: float = LORA_STRENGTH_DEFAULT, attrs=None):
        if rows < 1:
            raise ValueError("a LoRA widget needs at least one row")
        self.rows = rows
        self.default = default
        widgets = {}
        for index in range(rows):
            widgets[f"{index}_name"] = SearchableSelectWidget(choices=choices)
            widgets[f"{index}_strength"] = RangeNumberWidget(minimum, maximum, step)
        super().__init__(widgets, attrs)

    @property
    def media(self):
        return forms.Media(js=[WIDGETS_JS])

    def set_choices(self, choices) -> None:
        for widget in self.widgets[0::2]:
            widget.choices = choices

    def narrow(self, minimum: float, maximum: float, step: float) -> None:
        for widget in self.widgets[1::2]:
            widget.narrow(minimum, maximum, step)

    def decompress(self, value):
        """[{"name", "strength"}, ...] → [name0, strength0, name1, strength1, ...]."""
        flat = []
        for row in list(value or [])[: self.rows]:
            flat += [row.get("name", ""), row.get("strength", self.default)]
        while len(flat) < 2 * self.rows:
            flat += ["", self.default]
        return flat

    def get_context(self, name, value, attrs):
        # A cleaned value (a list of dicts, as an initial value is) is not the flat list
        # MultiWidget expects: flatten it first.
        if not value or (isinstance(value, (list, tuple)) and isinstance(value[0], dict)):
            value = self.decompress(value)
        context = super().get_context(name, value, attrs)
        subwidgets = context["widget"]["subwidgets"]
        # Ids named like the fields (id_loras_0_name), not numbered 0..2N-1.
        for suffix, subwidget in zip(self.widgets_names, subwidgets):
            if subwidget["attrs"].get("id"):
                subwidget["attrs"]["id"] = f"{context['widget']['attrs']['id']}{suffix}"
        context["widget"]["rows"] = [
            {"number": index + 1, "name": subwidgets[2 * index], "strength": subwidgets[2 * index + 1],
             "filled": any(subwidgets[2 * index]["value"] or ())}
            for index in range(self.rows)
        ]
        context["widget"]["default"] = _number(self.default)
        return context

    def id_for_label(self, id_):
        return f"{id_}{self.widgets_names[0]}" if id_ else id_


class LoraRowsField(forms.Field):
    """Up to `rows` LoRAs with a strength each; the cleaned value is a list of
    {"name": <choice value>, "strength": float} for the rows that name a LoRA, in row
    order (rows left on "None" are dropped, whatever their strength says).

    `choices` are the LoRAs offered (a "None" choice is put first); settable later as
    `field.choices`, like a ChoiceField's. The strength bounds default to LoraLoader's
    -10..10 by 0.01 and may be narrowed (constructor or `narrow()`), never widened. An
    empty strength box means the default strength."""

    widget = LoraRowsWidget
    default_error_messages = {
        "invalid_choice": _("LoRA %(row)s: “%(value)s” is not one of the LoRAs offered."),
        "invalid_strength": _("LoRA %(row)s: the strength must be a number."),
        "strength_range": _("LoRA %(row)s: the strength must be between %(min)s and %(max)s."),
        "required": _("Pick at least one LoRA."),
    }

    def __init__(self, *, choices=(), rows: int = LORA_ROWS, strength_min: float = LORA_STRENGTH_MIN,
                 strength_max: float = LORA_STRENGTH_MAX, strength_step: float = LORA_STRENGTH_STEP,
                 strength_default: float = LORA_STRENGTH_DEFAULT, required: bool = False, **kwargs):
        self.rows = rows
        self.strength_default = strength_default
        kwargs.setdefault("widget", LoraRowsWidget(rows=rows, default=strength_default))
        super().__init__(required=required, **kwargs)
        self.narrow(strength_min, strength_max, strength_step)
        self.choices = choices

    @property
    def choices(self):
        return self._choices

    @choices.setter
    def choices(self, value):
        value = [(str(key), label) for key, label in value if key not in ("", None)]
        self._choices = [("", _("None")), *value]
        self.widget.set_choices(self._choices)

    def narrow(self, minimum: float, maximum: float, step: float | None = None) -> None:
        """Offer and accept strengths in [minimum, maximum] only (inside -10..10)."""
        step = getattr(self, "strength_step", LORA_STRENGTH_STEP) if step is None else step
        _check_bounds(minimum, maximum, step)
        if minimum < LORA_STRENGTH_MIN or maximum > LORA_STRENGTH_MAX:
            raise ValueError(f"LoRA strengths stay within {LORA_STRENGTH_MIN}..{LORA_STRENGTH_MAX}")
        if not minimum <= self.strength_default <= maximum:
            raise ValueError(f"the default strength {self.strength_default} is outside {minimum}..{maximum}")
        self.strength_min, self.strength_max, self.strength_step = minimum, maximum, step
        self.widget.narrow(minimum, maximum, step)

    def __deepcopy__(self, memo):
        result = super().__deepcopy__(memo)
        result.widget.set_choices(result._choices)
        return result

    def clean(self, value):
        rows = _pairs(value, self.rows)
        cleaned, errors = [], []
        known = {key for key, _label in self._choices if key}
        for number, (name, strength) in enumerate(rows, start=1):
            name = (name or "").strip()
            if not name:
                continue
            if name not in known:
                errors.append(ValidationError(self.error_messages["invalid_choice"], code="invalid_choice",
                                              params={"row": number, "value": name}))
                continue
            parsed = self._strength(strength, number)
            if isinstance(parsed, ValidationError):
                errors.append(parsed)
                continue
            cleaned.append({"name": name, "strength": parsed})
        if errors:
            raise ValidationError(errors)
        if self.required and not cleaned:
            raise ValidationError(self.error_messages["required"], code="required")
        return cleaned

    def _strength(self, raw, row: int) -> float | ValidationError:
        text = str(raw).strip() if raw is not None else ""
        if text == "":
            return float(self.strength_default)
        try:
            strength = float(Decimal(text.replace(",", ".")))
        except (InvalidOperation, ValueError):
            return ValidationError(self.error_messages["invalid_strength"], code="invalid_strength",
                                   params={"row": row})
        if not math.isfinite(strength):
            return ValidationError(self.error_messages["invalid_strength"], code="invalid_strength",
                                   params={"row": row})
        if not self.strength_min <= strength <= self.strength_max:
            return ValidationError(self.error_messages["strength_range"], code="strength_range",
                                   params={"row": row, "min": _number(self.strength_min),
                                           "max": _number(self.strength_max)})
        return strength

    def has_changed(self, initial, data):
        return self._clean_quietly(initial) != self._clean_quietly(data)

    def _clean_quietly(self, value):
        try:
            return self.clean(value)
        except ValidationError:
            return None

    def prepare_value(self, value):
        if not value or (isinstance(value, (list, tuple)) and isinstance(value[0], dict)):
            return self.widget.decompress(value)
        return value


def _pairs(value, rows: int) -> list[tuple]:
    """The widget's flat [name, strength, ...] list (or an already cleaned list of
    dicts, as an initial value is) as (name, strength) pairs."""
    if not value:
        return []
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        return [(row.get("name"), row.get("strength")) for row in value][:rows]
    flat = list(value)
    return [(flat[i], flat[i + 1] if i + 1 < len(flat) else None) for i in range(0, min(len(flat), 2 * rows), 2)]


class ImageDropWidget(_ProjectTemplates, forms.FileInput):
    """A file input inside a drop zone: drop a picture on it, paste one, or click to
    choose; a thumbnail previews the chosen picture. Accepts PNG, JPEG and WebP."""

    template_name = "generation/widgets/image_drop.html"

    def __init__(self, attrs=None):
        super().__init__({"accept": IMAGE_TYPES, **(attrs or {})})

    @property
    def media(self):
        return forms.Media(js=[WIDGETS_JS])


class MaskEditorWidget(_ProjectTemplates, forms.FileInput):
    """A mask painted on a canvas over the picture of the form field `source` (an
    ImageDropWidget's choice), or over `source_url` when the page starts from a picture
    already on the server (rendered as data-source-url; a script may change that
    attribute later and the editor follows it).

    mask_editor.js writes the mask into this widget's own file input before the form is
    sent: a PNG of the picture's size, white (255) where painted, black (0) elsewhere,
    opaque; nothing painted, no file. So the server gets an ordinary upload, which the
    form's field (a FileField/ImageField) cleans. Without script the file input stays
    visible and takes a mask made elsewhere."""

    template_name = "generation/widgets/mask_editor.html"

    def __init__(self, source: str, source_url: str | None = None, attrs=None):
        super().__init__({"accept": "image/png", **(attrs or {})})
        self.source = source
        self.source_url = source_url

    @property
    def media(self):
        return forms.Media(js=[MASK_EDITOR_JS])

    def use_required_attribute(self, initial):
        # The input is filled by the script at submit time; a browser "required" check
        # would stop a form whose mask is still to be painted.
        return False

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"]["source"] = self.source
        context["widget"]["source_url"] = self.source_url or ""
        return context
