"""The caller's history over the API: cursor pages, newest first, with filters."""
from __future__ import annotations

from datetime import datetime, time as dtime

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _, gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.views import APIView

from config.api_errors import ApiError, error_response
from config.api_input import QueryIntegerField, int_parameter

from ..models import TaskStatus
from ..representation import TaskSerializer
from ..selectors import generation_list

HISTORY_DEFAULT_LIMIT = 20
HISTORY_MAX_LIMIT = 100
MODEL_MAX_LENGTH = 300
SEARCH_MAX_LENGTH = 200


class _MomentField(serializers.Field):
    """An ISO 8601 date or date-time. A date means its midnight; naive times are in TIME_ZONE."""

    default_error_messages = {
        "invalid": gettext_lazy("Use an ISO 8601 date (2025-11-01) or date-time (2025-11-01T16:23:19Z)."),
    }

    def to_internal_value(self, data) -> datetime:
        text = str(data).strip()
        # An unencoded "+01:00" in a query string arrives as " 01:00".
        if "T" in text and " " in text:
            text = text.replace(" ", "+")
        try:
            moment = parse_datetime(text)
            if moment is None:
                day = parse_date(text)
                moment = datetime.combine(day, dtime.min) if day else None
        except ValueError:
            moment = None
        if moment is None:
            self.fail("invalid")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment

    def to_representation(self, value):
        return value.isoformat()


class HistoryQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    model = serializers.CharField(max_length=MODEL_MAX_LENGTH, required=False)
    created_after = _MomentField(required=False)
    created_before = _MomentField(required=False)
    q = serializers.CharField(max_length=SEARCH_MAX_LENGTH, required=False, trim_whitespace=True)
    # Over the maximum is clamped to it (not an error), like DRF's max_page_size.
    limit = QueryIntegerField(required=False, min_value=1)
    page_size = QueryIntegerField(required=False, min_value=1)  # the old name of `limit`

    def validate(self, attrs):
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError({"created_before": [_("Must be later than created_after.")]})
        return attrs


class HistoryPagination(CursorPagination):
    """Cursor pages on (-created_at, -id): tasks created meanwhile never shift a page."""

    ordering = ("-created_at", "-id")
    page_size = HISTORY_DEFAULT_LIMIT
    max_page_size = HISTORY_MAX_LIMIT
    invalid_cursor_message = gettext_lazy("Invalid cursor: use the `next` or `previous` link as given.")

    def __init__(self, limit: int | None = None):
        if limit is not None:
            self.page_size = min(limit, self.max_page_size)

    def get_page_size(self, request):
        return self.page_size

    def decode_cursor(self, request):
        # An empty `cursor=` is no cursor, like every other empty query parameter.
        if not request.query_params.get(self.cursor_query_param):
            return None
        try:
            return super().decode_cursor(request)
        except NotFound:
            message = str(self.invalid_cursor_message)
            raise ApiError(code="invalid", message=message, fields={"cursor": [message]})


class HistoryPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")
    previous = serializers.URLField(allow_null=True, help_text="The previous (newer) page, or null.")
    results = TaskSerializer(many=True)


class GenerationHistoryApi(APIView):
    @extend_schema(
        operation_id="generation_history",
        summary="The caller's tasks, newest first",
        description=(
            "Cursor-paginated: follow `next` / `previous` (pages stay stable while new tasks arrive). "
            f"`limit` defaults to {HISTORY_DEFAULT_LIMIT}; values over {HISTORY_MAX_LIMIT} are clamped to "
            f"{HISTORY_MAX_LIMIT}. `created_after` is inclusive, `created_before` exclusive; a date means its "
            "midnight, a date-time without offset is in the server's time zone."
        ),
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="From a `next` / `previous` link."),
            int_parameter("limit", description=f"Tasks per page, 1..{HISTORY_MAX_LIMIT} (larger is clamped)."),
            int_parameter("page_size", description="The old name of `limit`.", deprecated=True),
            OpenApiParameter("status", OpenApiTypes.STR, enum=TaskStatus.values, description="Only this status."),
            OpenApiParameter("model", {"type": "string", "maxLength": MODEL_MAX_LENGTH},
                             description="Only this model (`model_name`)."),
            OpenApiParameter("created_after", OpenApiTypes.STR,
                             description="ISO 8601 date or date-time; created at or after it."),
            OpenApiParameter("created_before", OpenApiTypes.STR,
                             description="ISO 8601 date or date-time; created before it."),
            OpenApiParameter("q", {"type": "string", "maxLength": SEARCH_MAX_LENGTH},
                             description="Search the prompt text (case-insensitive)."),
        ],
        responses={200: HistoryPageSerializer, 400: error_response(400)},
        tags=["generation"],
    )
    def get(self, request):
        query = HistoryQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        qs = generation_list(
            user=request.user,
            status=params.get("status"),
            model_name=params.get("model"),
            created_after=params.get("created_after"),
            created_before=params.get("created_before"),
            search=params.get("q"),
        )
        paginator = HistoryPagination(limit=params.get("limit") or params.get("page_size"))
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(TaskSerializer(page, many=True, context={"request": request}).data)
