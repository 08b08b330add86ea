"""Admin forms for workflow templates. The rules live in `models_catalog.templates`;
these forms only parse what staff send and put the service's errors where they belong."""
from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import ComfyBackend, WorkflowTemplate
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
    """The change form: graph and bindings as indented JSON, checked together on save
    (structure only: no network call while saving; the list action asks a backend)."""

    graph = PrettyJSONField(label=_("ComfyUI API-format graph"), widget=forms.Textarea(attrs={"rows": 20}))
    bindings = PrettyJSONField(
        label=_("Bindings"),
        widget=forms.Textarea(attrs={"rows": 14}),
        help_text=_('Easel parameter → [node_id, input_name], e.g. <code>{"prompt": ["6", "text"]}</code>.'),
    )

    class Meta:
        model = WorkflowTemplate
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if "graph" in cleaned and "bindings" in cleaned:
            errors = template_validate(
                graph=cleaned["graph"], bindings=cleaned["bindings"], object_info=None, kind=cleaned.get("kind")
            )
            if errors:
                # Keyed by node id, which is neither field alone: shown above the form.
                self.add_error(None, errors_describe(errors, cleaned["graph"]))
        return cleaned
