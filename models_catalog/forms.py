"""Admin forms for workflow templates. The rules live in `models_catalog.templates`;
these forms only parse what staff send and put the service's errors where they belong."""
from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.conf import settings
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from generation.volcengine.catalog import MODELS as VOLC_MODELS

from .builtin import known_spec
from .inputs import narrow, spec_from, value_clean
from .models import ComfyBackend, TemplateInput, WorkflowTemplate
from .templates import errors_describe, template_validate

# A ComfyUI API export is tens of KB; anything this big is not a workflow.
MAX_WORKFLOW_BYTES = 5 * 1024 * 1024


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a graph or its bindings can be read and edited by hand."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class WorkflowTemplateImportForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    slug = forms.SlugField(
        label=_("Slug"), max_length=100, help_text=_("What API clients send as <code>template</code>, e.g. <code>portrait-hires</code>.")
    )
    workflow = forms.FileField(
        label=_("Workflow file (API format)"),
        help_text=_("In ComfyUI: Workflow → Export (API). The file saved with plain Save will not work."),
    )
    kind = forms.ChoiceField(
        label=_("Kind"),
        required=False,
        choices=[("", _("Detect (image to image when it loads a picture)"))] + WorkflowTemplate.KIND_CHOICES,
    )
    backend = forms.ModelChoiceField(
        label=_("Validate against"),
        queryset=ComfyBackend.objects.filter(enabled=True).order_by("name"),
        required=False,
        empty_label=_("The first online backend (or structural checks only)"),
    )
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_workflow(self):
        upload = self.cleaned_data["workflow"]
        if upload.size > MAX_WORKFLOW_BYTES:
            raise ValidationError(_("The file is too large to be a workflow."))
        try:
            return json.loads(upload.read().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationError(_("The file is not valid JSON: %(e)s") % {"e": exc}) from exc


class WorkflowTemplateAdminForm(forms.ModelForm):
    """The change form: the graph as indented JSON. Its inputs are edited beside it
    (TemplateInputFormSet), and the two are checked together on save (structure only: no
    network call while saving; the list action asks a backend)."""

    graph = PrettyJSONField(label=_("ComfyUI API-format graph"), widget=forms.Textarea(attrs={"rows": 20}))

    class Meta:
        model = WorkflowTemplate
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if "graph" in cleaned:
            errors = template_validate(graph=cleaned["graph"], bindings={}, object_info=None)
            if errors:
                # Keyed by node id, which is neither field alone: shown above the form.
                self.add_error(None, errors_describe(errors, cleaned["graph"]))
        return cleaned


class TemplateInputForm(forms.ModelForm):
    default = forms.JSONField(
        label=_("default"), required=False, help_text=_("JSON: 7, 0.5, \"text\", true; empty: none."),
        widget=forms.TextInput(attrs={"size": 12}),
    )

    class Meta:
        model = TemplateInput
        fields = ("name", "node_id", "input_name", "label", "help_text", "group", "default", "order", "minimum",
                  "maximum", "step", "optional")


class TemplateInputFormSet(forms.BaseInlineFormSet):
    """The inputs of one template, checked against its graph (each target a literal input
    that exists) and against ComfyUI's limits (staff may narrow them, never widen)."""

    def clean(self):
        super().clean()
        graph = self.instance.graph if isinstance(self.instance.graph, dict) else {}
        rows = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        bindings = {f.cleaned_data["name"]: [f.cleaned_data["node_id"], f.cleaned_data["input_name"]]
                    for f in rows if f.cleaned_data.get("name")}
        errors = template_validate(graph=graph, bindings=bindings, object_info=None, kind=self.instance.kind)
        if errors:
            raise ValidationError(errors_describe(errors, graph))
        for form in rows:
            data = form.cleaned_data
            node = graph.get(str(data["node_id"])) or {}
            class_type = str(node.get("class_type", ""))
            raw = (form.instance.spec if form.instance.pk and form.instance.input_name == data["input_name"]
                   and form.instance.node_id == data["node_id"] else None) or known_spec(class_type, data["input_name"])
            form.instance.spec = list(raw)
            spec = spec_from(raw, class_type=class_type, input_name=data["input_name"])
            if spec is None:
                continue
            try:
                narrowed = narrow(spec, minimum=data.get("minimum"), maximum=data.get("maximum"), step=data.get("step"))
            except ValueError as exc:
                form.add_error("maximum" if data.get("maximum") is not None else "minimum", str(exc))
                continue
            if data.get("default") is not None:
                problems = value_clean(narrowed, data["default"], choices=() if spec.kind == "file" else None)[1]
                if problems and spec.kind not in ("file", "image", "mask"):
                    form.add_error("default", problems)


class ComfyBackendAdminForm(forms.ModelForm):
    """A backend of either kind. A VolcEngine backend's secret is write-only: the field is always shown empty, an
    empty answer keeps the saved secret, and nothing ever sends it back to a page."""

    secret_access_key = forms.CharField(
        label=_("secret access key"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("VolcEngine: write-only, never shown again once saved. Leave empty to keep the saved one "
                    "(or, with none saved, to use EASEL_VOLCENGINE_SECRET_ACCESS_KEY from the environment)."),
    )
    forget_secret = forms.BooleanField(label=_("forget the saved secret"), required=False)
    offered_models = forms.MultipleChoiceField(
        label=_("models offered"), required=False, widget=forms.CheckboxSelectMultiple,
        choices=[(key, format_lazy("{} ({})", _(model.display_name), key)) for key, model in VOLC_MODELS.items()],
        help_text=_("VolcEngine: the models users may pick on this backend."),
    )

    class Meta:
        model = ComfyBackend
        exclude = ("abandoned_prompts",)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") != ComfyBackend.KIND_VOLCENGINE:
            return cleaned
        if not cleaned.get("offered_models"):
            self.add_error("offered_models", _("Choose at least one model this backend offers."))
        if not (cleaned.get("access_key_id") or settings.EASEL_VOLCENGINE_ACCESS_KEY_ID):
            self.add_error("access_key_id", _("Enter the access key id, or set EASEL_VOLCENGINE_ACCESS_KEY_ID."))
        return cleaned

    def save(self, commit=True):
        backend = super().save(commit=False)
        secret = self.cleaned_data.get("secret_access_key") or ""
        if self.cleaned_data.get("forget_secret"):
            backend.secret_access_key = ""
        elif not secret and self.instance.pk:
            # Empty means "keep": the page never had the saved secret to send back.
            backend.secret_access_key = ComfyBackend.objects.filter(pk=self.instance.pk).values_list(
                "secret_access_key", flat=True).first() or ""
        else:
            backend.secret_access_key = secret
        if commit:
            backend.save()
            self.save_m2m()
        return backend
