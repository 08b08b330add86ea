"""The catalog API: which workflow templates app clients can use, and their inputs.

Each template carries `schema`: its inputs as a JSON Schema of the create request
(Easel's parameters as top-level properties, custom inputs under `inputs`, pick-lists of
server files filled with the catalog's usable files), so a client builds its form
without hard-coding anything. `parameters` is the older list of Easel's own parameters.
"""
from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from . import files, inputs as kinds
from .models import TemplateInput, WorkflowTemplate
from .selectors import usable_file_titles
from .templates import PARAMETER_NAMES, template_parameters, template_schema


class TemplateParameterSerializer(serializers.Serializer):
    """One Easel parameter a template exposes (documentation of `template_parameters`)."""

    name = serializers.ChoiceField(choices=PARAMETER_NAMES)
    type = serializers.ChoiceField(choices=["checkpoint", "image", "string", "integer", "float", "choice", "boolean"])
    default = serializers.JSONField(allow_null=True, help_text="The template's own value; null for the image.")
    required = serializers.BooleanField(help_text="True for the source image of image-to-image templates.")
    node = serializers.CharField(help_text="ComfyUI node id the value goes to.")
    input = serializers.CharField(help_text="Input name on that node.")
    min = serializers.FloatField(required=False, help_text="Numbers: the lowest accepted value.")
    max = serializers.FloatField(required=False, help_text="Numbers: the highest accepted value.")
    step = serializers.FloatField(required=False)
    choices = serializers.ListField(child=serializers.CharField(), required=False, help_text="sampler, scheduler")
    multiline = serializers.BooleanField(required=False)


# What one property of a template's `schema` holds (JSON Schema keywords plus Easel's
# `x-easel-*` hints); documentation of `templates._property`.
_INPUT_SCHEMA = {
    "type": "object",
    "description": "The JSON Schema of one request field or input.",
    "properties": {
        "title": {"type": "string", "description": "Its label, in the request's language."},
        "description": {"type": "string", "description": "Help text, if any."},
        "type": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "integer, number, string or boolean; [\"string\", \"null\"] for an optional file.",
        },
        "enum": {"type": "array", "items": {"nullable": True},
                 "description": "The accepted values: a choice's options, or the usable files (null: none)."},
        "const": {"type": "string", "description": "`template` only: this template's slug."},
        "default": {"nullable": True, "description": "What the task gets when the field is left out."},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "x-easel-kind": {"type": "string", "enum": list(kinds.KINDS),
                         "description": "How a form shows it; `image` and `mask` take the id of an upload."},
        "x-easel-group": {"type": "string", "enum": ["basic", "advanced"]},
        "x-easel-step": {"type": "number", "description": "Numbers: the step of a slider."},
        "x-easel-multiline": {"type": "boolean", "description": "Text: a text area, not a line."},
        "x-easel-file-kind": {"type": "string", "enum": [files.CHECKPOINT, *files.MODEL_FILE_KINDS]},
        "x-easel-titles": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "File name → the name to show."},
    },
    "additionalProperties": True,
}

TEMPLATE_SCHEMA = {
    "type": "object",
    "description": "A JSON Schema (draft 2020-12) of the create request (`POST /api/v1/generation/create-async`) "
                   "for this template: Easel's parameters as properties, the template's own inputs under "
                   "`inputs` (an object schema of the same shape). Each property has `title`, `x-easel-group` "
                   "(basic/advanced), `x-easel-kind` (int, float, string, boolean, choice, file, image, mask); a "
                   "file input lists the usable files in `enum`, their names in `x-easel-titles`; an image or "
                   "mask is the id of an upload. A body built from it (its defaults, a choice of its enums) is one "
                   "the API accepts; a value it refuses (a wrong type, out of range, a file not offered) the API "
                   "refuses too, with a 400 naming the field.",
    "properties": {
        "$schema": {"type": "string", "enum": ["https://json-schema.org/draft/2020-12/schema"]},
        "type": {"type": "string", "enum": ["object"]},
        "properties": {"type": "object", "additionalProperties": _INPUT_SCHEMA,
                       "description": "Request field → its schema; `template` is this slug (`const`), custom "
                                      "inputs are under `inputs`."},
        "required": {"type": "array", "items": {"type": "string"},
                     "description": "The fields a request must send (the prompt, the source image)."},
    },
    "required": ["$schema", "type", "properties", "required"],
}


class TemplateSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=100, help_text="What to send as `template` when creating a task.")
    # Easel's own templates are named in the request's language (like a task's messages);
    # templates staff wrote, as they wrote them.
    name = serializers.CharField(source="shown_name", help_text="Its name, in the request's language.")
    kind = serializers.ChoiceField(
        choices=WorkflowTemplate.KIND_CHOICES,
        help_text="img2img templates start from a picture (`source_image`).",
    )
    description = serializers.CharField(
        source="shown_description", allow_blank=True, help_text="What it does, in the request's language; may be empty.",
    )
    is_default = serializers.BooleanField(help_text="Used for its kind when a task names no template.")
    parameters = serializers.SerializerMethodField(
        help_text="Easel's own parameters it takes (the older list; `schema` has every input).",
    )
    schema = serializers.SerializerMethodField()

    @extend_schema_field(TemplateParameterSerializer(many=True))
    def get_parameters(self, template) -> list[dict]:
        # From the stored input specs: a list endpoint must not wait on a GPU server.
        return template_parameters(template)

    @extend_schema_field(TEMPLATE_SCHEMA)
    def get_schema(self, template) -> dict:
        return template_schema(template, file_choices=self.context["file_choices"])


def _file_choices():
    """The catalog's usable files per kind, read once per request."""
    cache: dict[str, list] = {}

    def choices(kind: str) -> list[tuple[str, str]]:
        if kind not in cache:
            cache[kind] = usable_file_titles(kind)
        return cache[kind]

    return choices


def _templates():
    return WorkflowTemplate.objects.filter(enabled=True).prefetch_related(
        Prefetch("inputs", queryset=TemplateInput.objects.order_by("order", "pk"))
    )


class TemplateListApi(APIView):
    """Enabled templates with the parameters each exposes, so clients can build forms."""

    OutputSerializer = TemplateSerializer

    @extend_schema(
        operation_id="templates_list",
        summary="Workflow templates and their parameters",
        responses={
            200: inline_serializer("TemplateList", fields={"results": TemplateSerializer(many=True)}),
        },
        tags=["models"],
    )
    def get(self, request):
        templates = _templates().order_by("kind", "-is_default", "name", "pk")
        context = {"request": request, "file_choices": _file_choices()}
        return Response({"results": TemplateSerializer(templates, many=True, context=context).data})


class TemplateDetailApi(APIView):
    """One enabled template with its inputs."""

    @extend_schema(
        operation_id="templates_retrieve",
        summary="One workflow template and its inputs",
        description="The template named by its slug, with `schema`: the JSON Schema of a create request that "
                    "uses it. 404 for an unknown or disabled template.",
        parameters=[OpenApiParameter(
            "slug", {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$", "maxLength": 100}, OpenApiParameter.PATH,
            description="The template's slug (`slug` in `GET /api/v1/templates`).",
        )],
        responses={200: TemplateSerializer},
        tags=["models"],
    )
    def get(self, request, slug: str):
        template = _templates().filter(slug=slug).first()
        if template is None:
            raise Http404
        context = {"request": request, "file_choices": _file_choices()}
        return Response(TemplateSerializer(template, context=context).data)
