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


class TemplateSerializer(serializers.Serializer):
    slug = serializers.SlugField(help_text="What to send as `template` when creating a task.")
    # Easel's own templates are named in the request's language (like a task's messages);
    # templates staff wrote, as they wrote them.
    name = serializers.CharField(source="shown_name")
    kind = serializers.ChoiceField(choices=WorkflowTemplate.KIND_CHOICES)
    description = serializers.CharField(source="shown_description")
    is_default = serializers.BooleanField(help_text="Used for its kind when a task names no template.")
    parameters = serializers.SerializerMethodField()
    schema = serializers.SerializerMethodField()

    @extend_schema_field(TemplateParameterSerializer(many=True))
    def get_parameters(self, template) -> list[dict]:
        # From the stored input specs: a list endpoint must not wait on a GPU server.
        return template_parameters(template)

    @extend_schema_field({
        "type": "object",
        "description": "A JSON Schema (draft 2020-12) of the create request for this template: Easel's parameters "
                       "as properties, the template's own inputs under `inputs`. Each property has `title`, "
                       "`x-easel-group` (basic/advanced), `x-easel-kind` (int, float, string, boolean, choice, file, "
                       "image, mask); a file input lists the usable files in `enum`, their names in "
                       "`x-easel-titles`; an image or mask is the id of an upload.",
    })
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
        parameters=[OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The template's slug.")],
        responses={200: TemplateSerializer},
        tags=["models"],
    )
    def get(self, request, slug: str):
        template = _templates().filter(slug=slug).first()
        if template is None:
            raise Http404
        context = {"request": request, "file_choices": _file_choices()}
        return Response(TemplateSerializer(template, context=context).data)
