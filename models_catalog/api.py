"""The catalog API: which workflow templates app clients can use, and their parameters."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import WorkflowTemplate
from .templates import PARAMETER_NAMES, template_parameters


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

    @extend_schema_field(TemplateParameterSerializer(many=True))
    def get_parameters(self, template) -> list[dict]:
        # From the built-in node specs: a list endpoint must not wait on a GPU server.
        return template_parameters(template)


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
        templates = WorkflowTemplate.objects.filter(enabled=True).order_by("kind", "-is_default", "name", "pk")
        return Response({"results": TemplateSerializer(templates, many=True).data})
