"""What the caller may use: the models (checkpoints) and their daily quota."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from models_catalog.selectors import checkpoint_list_usable

from ..quota import quota_usage
from .schema import inline_serializer_results


class ModelSerializer(serializers.Serializer):
    """A checkpoint as clients pick it."""

    name = serializers.CharField()
    display_name = serializers.CharField(source="shown_name")
    description = serializers.CharField(source="shown_description", help_text="In the request's language.")
    default_width = serializers.IntegerField()
    default_height = serializers.IntegerField()
    default_steps = serializers.IntegerField()
    default_cfg = serializers.FloatField()
    default_sampler = serializers.CharField()
    default_scheduler = serializers.CharField()
    is_default = serializers.BooleanField(help_text="The model a task gets when it names none (staff's choice).")
    online = serializers.BooleanField(
        help_text="A backend taking work has this model now; if false, tasks wait until one returns."
    )


class ModelListApi(APIView):
    OutputSerializer = ModelSerializer  # kept for code that refers to it

    @extend_schema(
        operation_id="models_list",
        summary="Models the caller may use",
        responses={200: inline_serializer_results("ModelList", ModelSerializer)},
        tags=["models"],
    )
    def get(self, request):
        models = checkpoint_list_usable()
        return Response({"results": ModelSerializer(models, many=True).data})


class QuotaSerializer(serializers.Serializer):
    limit = serializers.IntegerField(help_text="Images per day (days follow the studio's TIME_ZONE).")
    used = serializers.IntegerField(
        help_text="Images of the tasks queued today (created or retried); failed and cancelled tasks give theirs back."
    )
    remaining = serializers.IntegerField()
    resets_at = serializers.DateTimeField()
    in_flight = serializers.IntegerField(help_text="Tasks pending or processing now.")
    max_concurrent_tasks = serializers.IntegerField()


class QuotaApi(APIView):
    @extend_schema(operation_id="quota", summary="The caller's daily quota and usage",
                   responses={200: QuotaSerializer}, tags=["generation"])
    def get(self, request):
        return Response(QuotaSerializer(quota_usage(user=request.user)).data)
