"""Webhook endpoints of the API: the caller's deliveries, its signing secret, its default URL."""
from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken
from config.api_errors import ApiError
from config.api_input import (
    JsonInput,
    PageNumberPagination,
    int_parameter,
    page_error_responses,
    page_parameters,
    query_int,
)

from ..models import WebhookDelivery
from ..webhooks.selectors import webhook_delivery_get, webhook_delivery_list
from ..webhooks.services import webhook_default_set


class WebhookDeliverySerializer(serializers.ModelSerializer):
    task_id = serializers.IntegerField(read_only=True, allow_null=True)
    last_error = serializers.CharField(source="error_text", read_only=True,
                                       help_text="Why the last attempt failed, in the request's language.")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id", "task_id", "event", "url", "message_id", "state", "attempts", "last_status_code", "last_error",
            "next_attempt_at", "created_at", "delivered_at",
        ]


class WebhookDeliveryDetailSerializer(WebhookDeliverySerializer):
    class Meta(WebhookDeliverySerializer.Meta):
        fields = WebhookDeliverySerializer.Meta.fields + ["payload"]


class DeliveryPagination(PageNumberPagination):
    """20 deliveries a page, `page_size` up to 100."""


def _calling_token(request) -> ApiToken:
    # The secret and default URL belong to one token; a browser session has none.
    if not isinstance(request.auth, ApiToken):
        raise ApiError(
            code="token_required",
            message=_("Use an API token for this request: webhook settings belong to a token."),
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    return request.auth


_SETTINGS = inline_serializer(
    "WebhookSettings",
    fields={"webhook_url": serializers.URLField(allow_null=True)},
)
_SECRET = inline_serializer(
    "WebhookSecret",
    fields={"secret": serializers.CharField(), "webhook_url": serializers.URLField(allow_null=True)},
)
_PAGE = inline_serializer(
    "WebhookDeliveryPage",
    fields={
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": WebhookDeliverySerializer(many=True),
    },
)


class WebhookDeliveryListApi(APIView):
    """The caller's deliveries, newest first; `?task=<id>` narrows to one task."""

    @extend_schema(
        operation_id="webhooks_deliveries_list",
        parameters=[
            int_parameter("task", description="Only this task's deliveries."),
            *page_parameters(DeliveryPagination),
        ],
        responses={200: _PAGE, **page_error_responses()},
    )
    def get(self, request):
        task_id = query_int(request.query_params, "task")
        qs = webhook_delivery_list(user=request.user, task_id=task_id)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryDetailApi(APIView):
    @extend_schema(operation_id="webhooks_deliveries_get", responses={200: WebhookDeliveryDetailSerializer})
    def get(self, request, delivery_id: int):
        delivery = webhook_delivery_get(user=request.user, delivery_id=delivery_id)
        return Response(WebhookDeliveryDetailSerializer(delivery).data)


class WebhookSecretApi(APIView):
    """The secret that signs webhooks of tasks created with the calling token."""

    @extend_schema(operation_id="webhooks_secret_get", responses={200: _SECRET})
    def get(self, request):
        token = _calling_token(request)
        return Response({"secret": token.webhook_secret, "webhook_url": token.webhook_url or None})


class WebhookDefaultApi(APIView):
    """Set (or clear with an empty or null `url`) the calling token's default callback URL."""

    class InputSerializer(JsonInput):
        # A plain string: callback_url_validate gives the precise reason a URL is refused.
        url = serializers.CharField(max_length=500, allow_blank=True, allow_null=True, trim_whitespace=True)

    @extend_schema(operation_id="webhooks_default_set", request=InputSerializer, responses={200: _SETTINGS})
    def put(self, request):
        token = _calling_token(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        webhook_default_set(token=token, url=data.validated_data["url"] or "")
        return Response({"webhook_url": token.webhook_url or None})
