"""OpenAPI pieces the API's views share (path parameters, headers, error answers)."""
from __future__ import annotations

from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from config.api_errors import error_response

TASK_ID = OpenApiParameter("task_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The task's id.")
IMAGE_ID = OpenApiParameter("image_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The image's id.")
LOCATION = OpenApiParameter(
    "Location", OpenApiTypes.URI, OpenApiParameter.HEADER, response=[202],
    description="Where to poll the task (`GET /api/v1/generation/status/{id}`).",
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="The `ETag` of the answer you hold: 304 with no body while it is still the current one.",
)
ETAG = OpenApiParameter(
    "ETag", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200, 304],
    description="A weak validator of this answer (`W/\"…\"`); send it back as `If-None-Match`.",
)
NOT_MODIFIED = OpenApiResponse(description="Not Modified: the answer is the one of the `If-None-Match` ETag. No body.")
QUOTA_429 = error_response(
    429,
    description=gettext_lazy("Daily image quota reached, or too many requests; wait `retry_after` seconds."),
    examples=[
        OpenApiExample(
            "Quota reached",
            value={"error": {"code": "quota_exceeded",
                             "message": "2 images left today; this request needs 4. It resets at 00:00.",
                             "fields": {}, "retry_after": 3600, "resets_at": "2025-11-02T00:00:00+00:00",
                             "limit": 200, "used": 198}},
            status_codes=["429"], response_only=True,
        )
    ],
)


def inline_serializer_results(name: str, item) -> serializers.Serializer:
    """`{"results": [item, ...]}`, the shape of the unpaginated lists."""
    return inline_serializer(name, fields={"results": item(many=True)})


def binary_answers(*media_types: str, description: str) -> dict:
    """A 200 that streams a file of one of these types."""
    return {(200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=description)
            for media_type in media_types}
