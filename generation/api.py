"""The generation API, as promised to app clients (shared/API-CONTRACT.md).

Paths have no trailing slash, as the existing clients call them. Every view documents
its answers for the OpenAPI schema (`/api/v1/schema/`); the error answers shared by all
operations are added by `config.api_errors.EaselAutoSchema`.
"""
from __future__ import annotations

import time
from datetime import datetime, time as dtime

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _, gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken
from config.api_errors import ApiError, error_response
from models_catalog.selectors import checkpoint_list_usable

from .files import image_response, preview_response
from .models import TERMINAL_STATUSES, GeneratedImage, GenerationTask, TaskStatus
from .selectors import generation_get, generation_list, image_get
from .services import (
    MAX_SEED,
    SAMPLERS,
    SCHEDULERS,
    generation_cancel,
    generation_create,
    generation_delete,
    generation_retry,
    quota_usage,
)

HISTORY_DEFAULT_LIMIT = 20
HISTORY_MAX_LIMIT = 100

TASK_ID = OpenApiParameter("task_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The task's id.")
IMAGE_ID = OpenApiParameter("image_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The image's id.")
LOCATION = OpenApiParameter(
    "Location", OpenApiTypes.URI, OpenApiParameter.HEADER, response=[202],
    description="Where to poll the task (`GET /api/v1/generation/status/{id}`).",
)
QUOTA_429 = error_response(
    429,
    description=gettext_lazy("Daily image quota reached, or too many requests; wait `retry_after` seconds."),
    examples=[
        OpenApiExample(
            "Quota reached",
            value={"error": {"code": "quota_exceeded",
                             "message": "Daily image quota reached (200 of 200 used). It resets at 00:00 UTC.",
                             "fields": {}, "retry_after": 3600, "resets_at": "2025-11-02T00:00:00+00:00",
                             "limit": 200, "used": 200}},
            status_codes=["429"], response_only=True,
        )
    ],
)


def inline_serializer_results(name: str, item) -> serializers.Serializer:
    """`{"results": [item, ...]}`, the shape of the unpaginated lists."""
    return inline_serializer(name, fields={"results": item(many=True)})


def _absolute(request, path: str) -> str:
    return request.build_absolute_uri(path) if request else path


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="Download URL (needs the owner's auth; `?download=1`).")
    thumbnail_url = serializers.SerializerMethodField(help_text="WebP thumbnail URL (needs the owner's auth).")

    class Meta:
        model = GeneratedImage
        fields = ["id", "index", "url", "thumbnail_url", "content_type", "width", "height", "seed", "size_bytes"]

    def _abs(self, name: str, image: GeneratedImage) -> str:
        return _absolute(self.context.get("request"), reverse(name, args=[image.pk]))

    def get_url(self, image) -> str:
        return self._abs("api-generation-image-file", image)

    def get_thumbnail_url(self, image) -> str:
        return self._abs("api-generation-image-thumbnail", image)


class ProgressSerializer(serializers.Serializer):
    value = serializers.IntegerField(help_text="Steps done on the current node.")
    max = serializers.IntegerField(help_text="Steps of the current node (0 until known).")
    fraction = serializers.FloatField(help_text="0..1, for a progress bar.")
    node = serializers.CharField(help_text="The ComfyUI node working now.")


class TaskSerializer(serializers.ModelSerializer):
    """A task as clients read it. The first fields are the promised ones; never rename."""

    user_id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=TaskStatus.choices, read_only=True)
    result_id = serializers.SerializerMethodField(help_text="The first image's id once completed.")
    error_message = serializers.SerializerMethodField(help_text="Why the task failed, in the request's language.")
    status_message = serializers.SerializerMethodField(
        help_text="Why the task is still waiting, in the request's language; empty if nothing to say."
    )
    progress = serializers.SerializerMethodField()
    preview_url = serializers.SerializerMethodField(help_text="The latest live frame while processing.")
    images = serializers.SerializerMethodField()
    template = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    source_image = serializers.IntegerField(source="source_image_id", read_only=True, allow_null=True)
    callback_url = serializers.CharField(read_only=True, help_text="The task's webhook URL; empty if none.")

    class Meta:
        model = GenerationTask
        fields = [
            "id", "user_id", "prompt", "model_name", "status", "result_id", "error_message", "created_at",
            "completed_at",
            "negative_prompt", "width", "height", "steps", "cfg", "sampler", "scheduler", "seed", "batch_size",
            "status_message", "progress", "preview_url", "error_code", "error_fields", "started_at", "images",
            "template", "source_image", "denoise", "callback_url", "retries",
        ]
        read_only_fields = fields

    def get_result_id(self, task) -> int | None:
        images = self._images(task)
        return images[0].pk if images else None

    def get_error_message(self, task) -> str | None:
        return task.error_text or None

    def get_status_message(self, task) -> str:
        return task.status_text

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, task) -> dict:
        return {
            "value": task.progress_value,
            "max": task.progress_max,
            "fraction": round(task.progress_fraction, 4),
            "node": task.progress_node,
        }

    def get_preview_url(self, task) -> str | None:
        # The latest live frame; 404 until the backend has sent one.
        if task.status != TaskStatus.PROCESSING:
            return None
        return _absolute(self.context.get("request"), reverse("api-generation-preview", args=[task.pk]))

    @extend_schema_field(ImageSerializer(many=True))
    def get_images(self, task) -> list[dict]:
        return ImageSerializer(self._images(task), many=True, context=self.context).data

    def _images(self, task):
        if task.status != TaskStatus.COMPLETED:
            return []
        # Uses the prefetch when the list selector made one.
        return sorted(task.images.all(), key=lambda i: i.index)


class TaskCreateInput(serializers.Serializer):
    prompt = serializers.CharField(max_length=settings.EASEL_MAX_PROMPT_LENGTH, allow_blank=False, trim_whitespace=True)
    model_name = serializers.CharField(
        max_length=300, required=False, allow_blank=True, help_text="A name from `GET /api/v1/models`; default: the first."
    )
    negative_prompt = serializers.CharField(
        max_length=settings.EASEL_MAX_PROMPT_LENGTH, required=False, allow_blank=True, default=""
    )
    width = serializers.IntegerField(
        required=False, min_value=settings.EASEL_MIN_SIZE, max_value=settings.EASEL_MAX_SIZE,
        help_text="A multiple of 8; default: the model's.",
    )
    height = serializers.IntegerField(
        required=False, min_value=settings.EASEL_MIN_SIZE, max_value=settings.EASEL_MAX_SIZE,
        help_text="A multiple of 8; default: the model's.",
    )
    steps = serializers.IntegerField(required=False, min_value=1, max_value=settings.EASEL_MAX_STEPS)
    cfg = serializers.FloatField(required=False, min_value=0.0, max_value=30.0)
    sampler = serializers.ChoiceField(choices=SAMPLERS, required=False)
    scheduler = serializers.ChoiceField(choices=SCHEDULERS, required=False)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED,
                                    help_text="Default: random.")
    batch_size = serializers.IntegerField(required=False, default=1, min_value=1,
                                          max_value=settings.EASEL_MAX_BATCH_SIZE)
    template = serializers.SlugField(
        max_length=100, required=False, allow_blank=True, allow_null=True,
        help_text="A workflow template slug; default: the default text-to-image template (image-to-image "
                  "with `source_image`).",
    )
    source_image = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="An uploaded source image's id (image-to-image)."
    )
    denoise = serializers.FloatField(
        required=False, allow_null=True, min_value=0.0, max_value=1.0,
        help_text="Image-to-image strength, 0..1, for templates that take it.",
    )
    callback_url = serializers.URLField(
        max_length=500, required=False, allow_blank=True,
        help_text="Webhook called when the task ends; default: the token's webhook URL.",
    )


def _create(request) -> GenerationTask:
    data = TaskCreateInput(data=request.data)
    data.is_valid(raise_exception=True)
    values = {k: v for k, v in data.validated_data.items() if v not in (None, "")}
    token = request.auth if isinstance(request.auth, ApiToken) else None
    return generation_create(user=request.user, api_token=token, **values)


def _status_url(request, task: GenerationTask) -> str:
    return request.build_absolute_uri(reverse("api-generation-status", args=[task.pk]))


def _accepted(request, task: GenerationTask) -> Response:
    body = TaskSerializer(task, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": _status_url(request, task)})


class GenerationCreateApi(APIView):
    """Create a task and wait a bounded time for it: 200 when finished, else 202."""

    @extend_schema(
        operation_id="generation_create",
        summary="Create a task and wait for it",
        description="Waits up to `EASEL_CREATE_WAIT_SECONDS` (default 30 s): 200 with the finished task, "
                    "else 202 with the task and `Location` to poll.",
        request=TaskCreateInput,
        parameters=[LOCATION],
        responses={
            200: OpenApiResponse(TaskSerializer, description="Finished (completed, failed or cancelled)."),
            202: OpenApiResponse(TaskSerializer, description="Still running; poll `Location`."),
            429: QUOTA_429,
        },
        tags=["generation"],
    )
    def post(self, request):
        task = _create(request)
        deadline = time.monotonic() + settings.EASEL_CREATE_WAIT_SECONDS
        while time.monotonic() < deadline:
            task.refresh_from_db()
            if task.status in TERMINAL_STATUSES:
                break
            time.sleep(0.25)
        if task.status in TERMINAL_STATUSES:
            return Response(TaskSerializer(task, context={"request": request}).data, status=status.HTTP_200_OK)
        return _accepted(request, task)


class GenerationCreateAsyncApi(APIView):
    @extend_schema(
        operation_id="generation_create_async",
        summary="Create a task and return at once",
        request=TaskCreateInput,
        parameters=[LOCATION],
        responses={202: OpenApiResponse(TaskSerializer, description="Accepted; poll `Location`."), 429: QUOTA_429},
        tags=["generation"],
    )
    def post(self, request):
        return _accepted(request, _create(request))


class GenerationStatusApi(APIView):
    @extend_schema(operation_id="generation_status", summary="A task", parameters=[TASK_ID],
                   responses={200: TaskSerializer}, tags=["generation"])
    def get(self, request, task_id: int):
        task = generation_get(user=request.user, task_id=task_id)
        return Response(TaskSerializer(task, context={"request": request}).data)


class ResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    error_message = serializers.CharField(allow_null=True)
    images = ImageSerializer(many=True)


class GenerationResultApi(APIView):
    @extend_schema(operation_id="generation_result", summary="A task's images", parameters=[TASK_ID],
                   responses={200: ResultSerializer}, tags=["generation"])
    def get(self, request, task_id: int):
        task = generation_get(user=request.user, task_id=task_id)
        body = TaskSerializer(task, context={"request": request}).data
        return Response(
            {"id": task.pk, "status": task.status, "error_message": body["error_message"], "images": body["images"]}
        )


class GenerationCancelApi(APIView):
    @extend_schema(
        operation_id="generation_cancel",
        summary="Cancel a task",
        description="A pending task never reaches a backend; a running one is stopped on its backend.",
        parameters=[TASK_ID],
        request=None,
        responses={200: OpenApiResponse(TaskSerializer, description="The cancelled task."),
                   409: error_response(409, description=gettext_lazy("The task has already finished."))},
        tags=["generation"],
    )
    def post(self, request, task_id: int):
        task = generation_cancel(task=generation_get(user=request.user, task_id=task_id))
        return Response(TaskSerializer(task, context={"request": request}).data)


class GenerationRetryApi(APIView):
    @extend_schema(
        operation_id="generation_retry",
        summary="Run a failed or cancelled task again",
        description="The same task (same id) goes back to `pending`; its old images are removed.",
        parameters=[TASK_ID, LOCATION],
        request=None,
        responses={202: OpenApiResponse(TaskSerializer, description="Queued again; poll `Location`."),
                   409: error_response(409, description=gettext_lazy("Only failed or cancelled tasks can be retried.")),
                   429: QUOTA_429},
        tags=["generation"],
    )
    def post(self, request, task_id: int):
        task = generation_retry(task=generation_get(user=request.user, task_id=task_id))
        return _accepted(request, task)


# --- history ----------------------------------------------------------------------


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
    model = serializers.CharField(max_length=300, required=False)
    created_after = _MomentField(required=False)
    created_before = _MomentField(required=False)
    q = serializers.CharField(max_length=200, required=False, trim_whitespace=True)
    # Over the maximum is clamped to it (not an error), like DRF's max_page_size.
    limit = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1)  # the old name of `limit`

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
        from rest_framework.exceptions import NotFound

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
            OpenApiParameter("limit", OpenApiTypes.INT,
                             description=f"Tasks per page, 1..{HISTORY_MAX_LIMIT} (larger is clamped)."),
            OpenApiParameter("status", OpenApiTypes.STR, enum=TaskStatus.values, description="Only this status."),
            OpenApiParameter("model", OpenApiTypes.STR, description="Only this model (`model_name`)."),
            OpenApiParameter("created_after", OpenApiTypes.STR,
                             description="ISO 8601 date or date-time; created at or after it."),
            OpenApiParameter("created_before", OpenApiTypes.STR,
                             description="ISO 8601 date or date-time; created before it."),
            OpenApiParameter("q", OpenApiTypes.STR, description="Search the prompt text (case-insensitive)."),
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


class GenerationDeleteApi(APIView):
    @extend_schema(operation_id="generation_delete", summary="Delete a task and its files", parameters=[TASK_ID],
                   responses={204: None}, tags=["generation"])
    def delete(self, request, task_id: int):
        task = generation_get(user=request.user, task_id=task_id)
        generation_delete(task=task)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- files ------------------------------------------------------------------------


class FirstRendererNegotiation(BaseContentNegotiation):
    """File views answer with the file whatever `Accept` says; errors are JSON.

    DRF's default negotiation would refuse `Accept: image/*` with 406 because the view's
    only renderer is JSON, although the successful answer is not rendered at all.
    """

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


DOWNLOAD = OpenApiParameter(
    "download", OpenApiTypes.BOOL,
    description="`1`/`true`: `Content-Disposition: attachment` (save as); otherwise `inline`.",
)


def _binary(*media_types: str, description: str) -> dict:
    return {(200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=description) for media_type in media_types}


def _file_answer(request, image: GeneratedImage, *, thumbnail: bool):
    response = image_response(image, thumbnail=thumbnail)
    if request.query_params.get("download", "").lower() in ("1", "true", "yes"):
        response["Content-Disposition"] = content_disposition_header(True, response.filename)
    return response


class GenerationImageFileApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_image_file",
        summary="Download an image",
        description="Streamed, with the image's content type; owner only.",
        parameters=[IMAGE_ID, DOWNLOAD],
        responses=_binary("image/png", "image/jpeg", "image/webp", description="The image."),
        tags=["generation"],
    )
    def get(self, request, image_id: int):
        return _file_answer(request, image_get(user=request.user, image_id=image_id), thumbnail=False)


class GenerationImageThumbnailApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_image_thumbnail",
        summary="Download an image's thumbnail",
        description="A WebP, at most `EASEL_THUMBNAIL_SIZE` pixels on its longest edge; owner only.",
        parameters=[IMAGE_ID, DOWNLOAD],
        responses=_binary("image/webp", description="The thumbnail."),
        tags=["generation"],
    )
    def get(self, request, image_id: int):
        return _file_answer(request, image_get(user=request.user, image_id=image_id), thumbnail=True)


class GenerationPreviewApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_preview",
        summary="The latest live preview frame of a running task",
        description="404 until the backend has sent a frame, and after the task ended.",
        parameters=[TASK_ID],
        responses=_binary("image/jpeg", "image/png", description="The frame."),
        tags=["generation"],
    )
    def get(self, request, task_id: int):
        return preview_response(generation_get(user=request.user, task_id=task_id))


# --- catalog, quota, health ---------------------------------------------------------


class ModelSerializer(serializers.Serializer):
    """A checkpoint as clients pick it."""

    name = serializers.CharField()
    display_name = serializers.CharField(source="shown_name")
    description = serializers.CharField()
    default_width = serializers.IntegerField()
    default_height = serializers.IntegerField()
    default_steps = serializers.IntegerField()
    default_cfg = serializers.FloatField()
    default_sampler = serializers.CharField()
    default_scheduler = serializers.CharField()
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
    limit = serializers.IntegerField(help_text="Images per UTC day.")
    used = serializers.IntegerField(help_text="Images counted today (failed and cancelled tasks give theirs back).")
    remaining = serializers.IntegerField()
    resets_at = serializers.DateTimeField()
    in_flight = serializers.IntegerField(help_text="Tasks pending or processing now.")
    max_concurrent_tasks = serializers.IntegerField()


class QuotaApi(APIView):
    @extend_schema(operation_id="quota", summary="The caller's daily quota and usage",
                   responses={200: QuotaSerializer}, tags=["generation"])
    def get(self, request):
        return Response(QuotaSerializer(quota_usage(user=request.user)).data)
