"""The generate form: the page's face of `generation_create`.

The form only parses what the browser sends (numbers are numbers, choices are known);
every business rule (sizes, limits, the catalog) stays in the service, whose
per-field ValidationError is mapped back onto the form's fields by `apply_service_errors`.
"""
from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from models_catalog import inputs as kinds
from models_catalog.selectors import usable_files_online
from models_catalog.templates import template_fields

from ..limits import SAMPLERS, SCHEDULERS, ranges
from .widgets import ImageDropWidget, LoraRowsField, MaskEditorWidget, RangeNumberWidget, SearchableSelectWidget

CUSTOM_SIZE = "custom"
SIZE_PRESETS = [(512, 512), (768, 512), (512, 768), (1024, 1024)]

# A template's own inputs are form fields under this prefix (in_lora_1, in_mask, …).
TOOL_PREFIX = "in_"


def tool_field(field, *, source_url: str = "") -> forms.Field:
    """The form field of one custom template input, with the control its type wants."""
    spec = field.spec
    common = {"label": field.label, "help_text": field.help_text, "required": False, "initial": field.default}
    if spec.numeric:
        klass = forms.IntegerField if spec.kind == kinds.INT else forms.FloatField
        if spec.minimum is not None and spec.maximum is not None:
            widget = RangeNumberWidget(spec.minimum, spec.maximum, spec.step or (1 if spec.kind == kinds.INT else 0.01))
        else:
            widget = forms.NumberInput(attrs={"step": spec.step or "any"})
        return klass(widget=widget, **common)
    if spec.kind == kinds.BOOLEAN:
        return forms.BooleanField(**common)
    if spec.kind == kinds.STRING:
        return forms.CharField(strip=False, widget=forms.Textarea(attrs={"rows": 3}) if spec.multiline else None,
                               **common)
    if spec.kind in (kinds.CHOICE, kinds.FILE):
        choices = [(c, c) for c in spec.choices] if spec.kind == kinds.CHOICE else usable_file_choices(spec.file_kind)
        if field.optional:
            choices = [("", _("None"))] + list(choices)
        return forms.ChoiceField(choices=choices, widget=SearchableSelectWidget(), **common)
    if spec.kind == kinds.MASK:
        return forms.FileField(widget=MaskEditorWidget(source="source_file", source_url=source_url or None), **common)
    return forms.FileField(widget=ImageDropWidget(), **common)


# A template's LoRA slots (lora_1..lora_N with their strengths) are one rows field.
LORA_ROWS_FIELD = TOOL_PREFIX + "loras"
_LORA_SLOT = re.compile(r"^lora_(\d+)$")
_LORA_SLOT_OF = re.compile(r"^lora_(\d+)(?:_strength|_clip_strength)?$")


def lora_slots(fields) -> list[int]:
    """The slot numbers of a template's LoRA inputs, when they can be shown as rows: every
    lora_N an optional LoRA file with a numeric lora_N_strength (lora_N_clip_strength may
    come too). Anything else (a required LoRA, a slot without its strength) keeps its own
    fields: an empty list."""
    by_name = {f.name: f for f in fields}
    slots = []
    for field in fields:
        match = _LORA_SLOT.match(field.name)
        if not match:
            continue
        strength = by_name.get(f"{field.name}_strength")
        clip = by_name.get(f"{field.name}_clip_strength")
        if not (field.spec.kind == kinds.FILE and field.spec.file_kind == "lora" and field.optional
                and strength is not None and strength.spec.numeric
                and (clip is None or clip.spec.numeric)):
            return []
        slots.append(int(match.group(1)))
    return sorted(slots)


def lora_slot_names(slots) -> set[str]:
    """The inputs the rows field stands for."""
    return {name for n in slots for name in (f"lora_{n}", f"lora_{n}_strength", f"lora_{n}_clip_strength")}


def lora_rows_field(fields, slots) -> LoraRowsField:
    """One LoRA pick-list and strength slider per slot. The strength a row shows is the
    slot's model strength and its CLIP strength both (what ComfyUI's own LoRA loader
    nodes start with); a different CLIP strength stays an API matter, since a row the
    user removes moves the rows below it up and a separate per-slot field would not
    follow it."""
    strength = next(f for f in fields if f.name == f"lora_{slots[0]}_strength")
    spec = strength.spec
    bounds = {}
    if spec.minimum is not None and spec.maximum is not None:
        bounds = {"strength_min": max(float(spec.minimum), -10.0), "strength_max": min(float(spec.maximum), 10.0)}
        if spec.step:
            bounds["strength_step"] = float(spec.step)
    return LoraRowsField(
        label=_("LoRAs"), choices=usable_file_choices("lora"), rows=len(slots),
        strength_default=float(strength.default if strength.default is not None else 1.0),
        help_text=_("Each LoRA's strength applies to the model and the text encoder alike."), **bounds)


def usable_file_choices(kind: str) -> list[tuple[str, str]]:
    """The files of a kind users may pick, those on no online server flagged as such."""
    return [(name, title if online else _("%(name)s (offline, will wait)") % {"name": title})
            for name, title, online in usable_files_online(kind)]


# Service error keys whose form field has another name; anything unknown goes on top.
SERVICE_FIELD_MAP = {"model_name": "model", "source_image": "source", "image": "source_file", "__all__": None}
# The fields a "use these settings again" link may prefill (query string → initial).
PREFILL_FIELDS = (
    "prompt", "negative_prompt", "model", "size", "width", "height", "steps", "cfg", "sampler", "scheduler",
    "seed", "batch_size", "template", "source", "denoise",
)


def size_choices() -> list[tuple[str, str]]:
    choices = [(f"{w}x{h}", f"{w} × {h}") for w, h in SIZE_PRESETS]
    return choices + [(CUSTOM_SIZE, _("Custom"))]


class GenerateForm(forms.Form):
    # Required-ness of the prompt is the service's rule (with its friendlier message).
    prompt = forms.CharField(
        label=_("Prompt"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": _("Describe the picture you want…")}),
    )
    negative_prompt = forms.CharField(
        label=_("Negative prompt"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": _("What to leave out (optional)")}),
    )
    # Not required here: with no model at all the service explains why in plain words.
    model = forms.ChoiceField(label=_("Model"), choices=(), required=False)
    size = forms.ChoiceField(label=_("Size"), choices=size_choices)
    width = forms.IntegerField(label=_("Width"), required=False)
    height = forms.IntegerField(label=_("Height"), required=False)
    steps = forms.IntegerField(label=_("Steps"))
    cfg = forms.FloatField(label=_("CFG"))
    sampler = forms.ChoiceField(label=_("Sampler"), choices=[(s, s) for s in SAMPLERS])
    scheduler = forms.ChoiceField(label=_("Scheduler"), choices=[(s, s) for s in SCHEDULERS])
    seed = forms.IntegerField(
        label=_("Seed"),
        required=False,
        widget=forms.NumberInput(attrs={"placeholder": _("random")}),
        help_text=_("Leave empty for a random seed."),
    )
    # Checked: a new random seed each time, whatever the seed box says.
    seed_random = forms.BooleanField(label=_("Random seed"), required=False)
    batch_size = forms.TypedChoiceField(label=_("Images"), coerce=int)
    template = forms.ChoiceField(label=_("Workflow"), choices=(), required=False)
    # img2img: a new upload wins over a picked past upload ("s<id>") or result ("r<id>").
    source_file = forms.FileField(
        label=_("Upload a picture"),
        required=False,
        widget=forms.FileInput(attrs={"accept": "image/png,image/jpeg,image/webp"}),
        help_text=_("PNG, JPEG or WebP. Or drop a picture here."),
    )
    source = forms.CharField(label=_("Source image"), required=False, widget=forms.HiddenInput)
    denoise = forms.FloatField(
        label=_("Denoise"),
        required=False,
        help_text=_("How far the result may move away from the source (0 to 1)."),
    )

    def __init__(self, *args, checkpoints=(), templates=(), source_url: str = "", **kwargs):
        self.checkpoints = list(checkpoints)
        self.templates = list(templates)
        self.source_url = source_url
        first = self.checkpoints[0] if self.checkpoints else None
        if first is not None and not kwargs.get("data") and not (args and args[0]):
            kwargs.setdefault("initial", initial_for(first))
        super().__init__(*args, **kwargs)
        # Models whose backends are all offline stay selectable (the task waits for
        # one), but say so.
        self.fields["model"].choices = [
            (c.name, c.shown_name if getattr(c, "online", True) else _("%(name)s (offline, will wait)") % {
                "name": c.shown_name})
            for c in self.checkpoints
        ]
        self.fields["template"].choices = [(t.slug, t.shown_name) for t in self.templates]
        bounds = ranges()
        batch = bounds["batch_size"]
        self.fields["batch_size"].choices = [(n, str(n)) for n in range(batch.low, batch.high + 1)]
        # The browser's number inputs offer the service's own bounds (the service checks them).
        for name in ("width", "height", "steps", "cfg", "seed", "denoise"):
            self.fields[name].widget.attrs.update(min=bounds[name].low, max=bounds[name].high, step=bounds[name].step)
        # The selected template's own inputs (a LoRA, an upscale model, a mask…).
        self.tool = [f for f in template_fields(self.selected_template()) if not f.builtin] \
            if self.selected_template() is not None else []
        self.lora_slots = lora_slots(self.tool)
        grouped = lora_slot_names(self.lora_slots)
        for field in self.tool:
            if field.name in grouped:
                if field.name == f"lora_{self.lora_slots[0]}":
                    self.fields[LORA_ROWS_FIELD] = lora_rows_field(self.tool, self.lora_slots)
                continue
            self.fields[TOOL_PREFIX + field.name] = tool_field(field, source_url=self.source_url)

    def tool_bound_fields(self, group: str) -> list:
        grouped = lora_slot_names(self.lora_slots)
        bound = []
        for f in self.tool:
            if f.name not in grouped:
                if f.group == group:
                    bound.append(self[TOOL_PREFIX + f.name])
            elif f.name == f"lora_{self.lora_slots[0]}" and group == "basic":
                bound.append(self[LORA_ROWS_FIELD])  # where the first slot stood
        return bound

    def tool_field_name(self, input_name: str) -> str | None:
        """The form field showing a template input (the rows field for a LoRA slot)."""
        if input_name in lora_slot_names(self.lora_slots):
            return LORA_ROWS_FIELD
        return TOOL_PREFIX + input_name if any(f.name == input_name for f in self.tool) else None

    def chosen_loras(self) -> dict[int, dict]:
        """Slot number → {"name", "strength"} of the rows that name a LoRA, each in its
        own row's slot (a row left empty leaves its slot empty)."""
        if not self.lora_slots:
            return {}
        cleaned = self.cleaned_data.get(LORA_ROWS_FIELD) if hasattr(self, "cleaned_data") else None
        if not cleaned:
            return {}
        raw = self[LORA_ROWS_FIELD].value() or []
        if raw and isinstance(raw[0], dict):
            filled = list(range(len(raw)))
        else:
            filled = [i for i in range(len(self.lora_slots)) if str((raw[2 * i:2 * i + 1] or [""])[0] or "").strip()]
        return {self.lora_slots[index]: row for index, row in zip(filled, cleaned)}

    @property
    def tool_uploads(self) -> list[str]:
        """The names of the tool's inputs that are pictures (uploaded by the view)."""
        return [f.name for f in self.tool if f.spec.kind in kinds.UPLOAD_KINDS]

    def clean(self):
        data = super().clean()
        if data.get("seed_random"):
            data["seed"] = None
        source = data.get("source") or ""
        if source and not (source[:1] in ("s", "r") and source[1:].isdigit()):
            self.add_error("source", _("Pick a source image from the list."))
        size = data.get("size")
        if size and size != CUSTOM_SIZE:
            data["width"], data["height"] = (int(part) for part in size.split("x"))
        elif size == CUSTOM_SIZE:
            for name in ("width", "height"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, _("Give a %(field)s for a custom size.") % {"field": self.fields[name].label})
        return data

    def service_kwargs(self) -> dict:
        """The request for the service, from the fields that parsed (all of them once the
        form is valid; the others are left out, so the service judges what it can)."""
        data = self.cleaned_data
        values = {
            "prompt": data.get("prompt", ""),
            "negative_prompt": data.get("negative_prompt", ""),
            "model_name": data.get("model") or None,
            "width": data.get("width"),
            "height": data.get("height"),
            "steps": data.get("steps"),
            "cfg": data.get("cfg"),
            "sampler": data.get("sampler"),
            "scheduler": data.get("scheduler"),
            "seed": data.get("seed"),
            "batch_size": data.get("batch_size"),
            "template": data.get("template") or None,
            "denoise": data.get("denoise"),
        }
        values = {key: value for key, value in values.items() if value is not None or key in ("seed", "denoise")}
        grouped = lora_slot_names(self.lora_slots)
        values["inputs"] = {
            f.name: data.get(TOOL_PREFIX + f.name)
            for f in self.tool if f.name not in grouped and f.spec.kind not in kinds.UPLOAD_KINDS
            and data.get(TOOL_PREFIX + f.name) not in (None, "")
        }
        names = {f.name for f in self.tool}
        for slot, row in self.chosen_loras().items():
            values["inputs"][f"lora_{slot}"] = row["name"]
            values["inputs"][f"lora_{slot}_strength"] = row["strength"]
            if f"lora_{slot}_clip_strength" in names:
                values["inputs"][f"lora_{slot}_clip_strength"] = row["strength"]
        return values

    def selected_template(self):
        slug = self["template"].value()
        return next((t for t in self.templates if t.slug == slug), None)

    @property
    def wants_source(self) -> bool:
        template = self.selected_template()
        return template is not None and template.takes_image

    def apply_service_errors(self, exc: ValidationError | dict) -> None:
        """Put each of the service's messages beside the field at fault (a field that
        already has the form's own error keeps that one: one message per problem)."""
        custom = self.cleaned_data.get("size") == CUSTOM_SIZE
        errors = exc if isinstance(exc, dict) else exc.message_dict
        had_errors = set(self.errors)
        for key, messages in errors.items():
            field = SERVICE_FIELD_MAP.get(key, key)
            field = self.tool_field_name(key) or field
            # A preset size the server refuses (a smaller EASEL_MAX_SIZE) is the size picker's fault.
            if field in ("width", "height") and not custom:
                field = "size"
            if field is not None and field not in self.fields:
                field = None
            if field is not None and field in had_errors:
                continue
            if field == LORA_ROWS_FIELD:
                # Several slots share the rows field: each message says its row.
                slot = int(_LORA_SLOT_OF.match(key).group(1))
                row = self.lora_slots.index(slot) + 1
                messages = [_("LoRA %(row)s: %(message)s") % {"row": row, "message": m} for m in messages]
            self.add_error(field, messages)


def initial_for(checkpoint) -> dict:
    """The form's starting values for a model (its defaults)."""
    size = f"{checkpoint.default_width}x{checkpoint.default_height}"
    presets = {value for value, _label in size_choices()}
    return {
        "model": checkpoint.name,
        "size": size if size in presets else CUSTOM_SIZE,
        "width": checkpoint.default_width,
        "height": checkpoint.default_height,
        "steps": checkpoint.default_steps,
        "cfg": checkpoint.default_cfg,
        "sampler": checkpoint.default_sampler,
        "scheduler": checkpoint.default_scheduler,
        "batch_size": 1,
        "seed_random": True,
    }


class HistoryFilterForm(forms.Form):
    """The history page's search and filters (a GET form; every field optional)."""

    q = forms.CharField(label=_("Search prompts"), required=False, max_length=200,
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": _("Search prompts…")}))
    status = forms.ChoiceField(label=_("Status"), required=False)
    model = forms.ChoiceField(label=_("Model"), required=False)
    date_from = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, models=(), statuses=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", _("Any status")), *statuses]
        # (name, label) pairs: the catalog's names with their display names.
        self.fields["model"].choices = [("", _("Any model")), *models]

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", _("The end date is before the start date."))
        return data
