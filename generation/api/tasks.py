"""The generation API, as promised to app clients (docs/api-contract.md): create, follow,
cancel, retry and delete a task.

Paths have no trailing slash, as the existing clients call them. Every view documents
its answers for the OpenAPI schema (`/api/v1/schema/`); the error answers shared by all
operations are added by `config.api_errors.EaselAutoSchema`.
"""
from __future__ import annotations

from collections.abc import Mapping

from django.core.validators import MaxLengthValidator, MaxValueValidator, MinLengthValidator, MinValueValidator
from django.urls import reverse
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.fields import SkipField
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken
from config.api_errors import error_response
from config.api_input import JsonInput
from config.bounds import ID_MIN, INT64_MAX
from config.conditional import etag_matches, not_modified

from ..limits import SAMPLERS, SCHEDULERS, SIZE_MULTIPLE, prompt_max_length, ranges
from ..models import TERMINAL_STATUSES, GenerationTask, TaskStatus
from ..representation import (
    ImageSerializer, TaskDetailSerializer, TaskSerializer, task_status_answer, task_status_etag,
)
from ..selectors import generation_get, generation_status_read
from ..services import generation_cancel, generation_check, generation_create, generation_delete, generation_retry
from .idempotency import IDEMPOTENCY_409, IDEMPOTENCY_422, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, idempotent_create, replayed_headers
from .schema import ETAG, IF_NONE_MATCH, LOCATION, NOT_MODIFIED, QUOTA_429, TASK_ID
from .waits import task_wait

_RANGES = ranges()  # read once: the schema describes the limits the studio started with
_BOUNDS = (MinValueValidator, MaxValueValidator, MinLengthValidator, MaxLengthValidator)


class BoundsInSchema:
    """A field that documents its bounds in the schema but leaves checking them to the
    service (generation.limits), so every bound is checked in one wording, together with
    every other problem of the request."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, _BOUNDS)]


class Integer(BoundsInSchema, serializers.IntegerField):
    pass


class Number(BoundsInSchema, serializers.FloatField):
    pass


class Text(BoundsInSchema, serializers.CharField):
    pass


class Choice(serializers.ChoiceField):
    """The choices are in the schema; an unknown one is the service's to name ("Unknown sampler: x")."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        return super().to_internal_value(data)


@extend_schema_field({"type": "integer", "minimum": _RANGES["width"].low, "maximum": _RANGES["width"].high,
                      "multipleOf": SIZE_MULTIPLE})
class SizeField(Integer):
    """A width or height: a multiple of 8 within the studio's bounds (the service checks both)."""

    def __init__(self, **kwargs):
        super().__init__(min_value=_RANGES["width"].low, max_value=_RANGES["width"].high, **kwargs)


@extend_schema_field({
    "type": "object", "nullable": True,
    "additionalProperties": {
        "nullable": True,
        "description": "A number, text, true/false, a file name from the input's `enum`, or an upload's id; "
                       "null or left out: its default (an optional LoRA: none).",
    },
})
class InputsField(serializers.JSONField):
    """A template's own inputs: any JSON object here; each value is checked by the service
    against the template's inputs (`models_catalog.inputs.value_clean`), so the refusal
    names the input, and a non-object is refused there too."""


class TaskCreateInput(JsonInput):
    # Blank is the service's to refuse, with its friendlier words; the schema still says "at least 1".
    prompt = Text(max_length=prompt_max_length(), min_length=1, allow_blank=True, trim_whitespace=True,
                  required=False, help_text="Required by every template that takes a prompt (all but upscaling).")
    model_name = serializers.CharField(
        max_length=300, required=False, allow_blank=True, help_text="A name from `GET /api/v1/models`; default: the default model (its `is_default`)."
    )
    negative_prompt = Text(max_length=prompt_max_length(), required=False, allow_blank=True, default="")
    width = SizeField(required=False, help_text="A multiple of 8; default: the model's.")
    height = SizeField(required=False, help_text="A multiple of 8; default: the model's.")
    steps = Integer(required=False, min_value=_RANGES["steps"].low, max_value=_RANGES["steps"].high)
    cfg = Number(required=False, min_value=_RANGES["cfg"].low, max_value=_RANGES["cfg"].high)
    sampler = Choice(choices=SAMPLERS, required=False)
    scheduler = Choice(choices=SCHEDULERS, required=False)
    seed = Integer(required=False, allow_null=True, min_value=_RANGES["seed"].low, max_value=_RANGES["seed"].high,
                   help_text="Default: random.")
    batch_size = Integer(required=False, default=1, min_value=_RANGES["batch_size"].low,
                         max_value=_RANGES["batch_size"].high)
    template = serializers.SlugField(
        max_length=100, required=False, allow_blank=True, allow_null=True,
        help_text="A workflow template slug; default: the default text-to-image template (image-to-image "
                  "with `source_image`).",
    )
    source_image = serializers.IntegerField(
        required=False, allow_null=True, min_value=ID_MIN, max_value=INT64_MAX,
        help_text="An uploaded source image's id (image-to-image).",
    )
    denoise = Number(
        required=False, allow_null=True, min_value=_RANGES["denoise"].low, max_value=_RANGES["denoise"].high,
        help_text="Image-to-image strength, 0..1, for templates that take it.",
    )
    callback_url = serializers.URLField(
        max_length=500, required=False, allow_blank=True,
        help_text="Webhook called when the task ends; default: the token's webhook URL.",
    )
    inputs = InputsField(
        required=False, allow_null=True,
        help_text="The template's own inputs beyond the fields above (LoRAs, upscale factor, mask, …): an object "
                  "of input name → value, as `GET /api/v1/templates/{slug}` describes them under "
                  "`schema.properties.inputs`. A picture or mask is the id of an upload. An input left out gets "
                  "its default; a name the template does not have is refused (400, under `inputs`).",
    )


def _parsed(data: serializers.Serializer) -> dict:
    """The values of an invalid body's fields that are fine on their own."""
    values = {}
    for name, field in data.fields.items():
        if name in data.errors or field.read_only:
            continue
        try:
            values[name] = field.run_validation(field.get_value(data.initial_data))
        except (serializers.ValidationError, SkipField):
            continue
    return values


def _create(request) -> tuple[GenerationTask, bool]:
    """The task of this create (replayed=True: the one an earlier request with the same
    Idempotency-Key created)."""
    return idempotent_create(request, operation="generation.create", create_fn=lambda: _create_task(request))


def _create_task(request) -> GenerationTask:
    data = TaskCreateInput(data=request.data)
    token = request.auth if isinstance(request.auth, ApiToken) else None
    if not data.is_valid():
        if not isinstance(data.initial_data, Mapping):
            raise serializers.ValidationError(data.errors)  # not an object at all: nothing else to judge
        # Some values did not even parse: the service still judges the others, so the
        # answer lists every problem at once (a field keeps its parse error).
        values = {k: v for k, v in _parsed(data).items() if v not in (None, "")}
        problems = generation_check(
            user=request.user, api_token=token, prompt=values.pop("prompt", ""), strict=True, **values
        )
        raise serializers.ValidationError({**problems, **data.errors})
    values = {k: v for k, v in data.validated_data.items() if v not in (None, "")}
    return generation_create(
        user=request.user, api_token=token, prompt=values.pop("prompt", ""), strict=True, **values
    )


def _status_url(request, task: GenerationTask) -> str:
    return request.build_absolute_uri(reverse("api-generation-status", args=[task.pk]))


def _accepted(request, task: GenerationTask, *, replayed: bool = False) -> Response:
    body = TaskSerializer(task, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED,
                    headers={"Location": _status_url(request, task), **replayed_headers(replayed)})


class GenerationCreateApi(APIView):
    """Create a task and wait a bounded time for it: 200 when finished, else 202."""

    @extend_schema(
        operation_id="generation_create",
        summary="Create a task and wait for it",
        description="Waits up to `EASEL_CREATE_WAIT_SECONDS` (default 30 s): 200 with the finished task, "
                    "else 202 with the task and `Location` to poll. A caller who already has "
                    "`EASEL_CREATE_WAIT_PER_USER` creates waiting (or when the server's waiting slots are "
                    "taken) gets the 202 at once.",
        request=TaskCreateInput,
        parameters=[IDEMPOTENCY_KEY, LOCATION, IDEMPOTENT_REPLAYED],
        responses={
            200: OpenApiResponse(TaskSerializer, description="Finished (completed, failed or cancelled)."),
            202: OpenApiResponse(TaskSerializer, description="Still running; poll `Location`."),
            409: IDEMPOTENCY_409,
            422: IDEMPOTENCY_422,
            429: QUOTA_429,
        },
        tags=["generation"],
    )
    def post(self, request):
        task, replayed = _create(request)
        task = task_wait(task, user_id=request.user.pk)
        if task.status in TERMINAL_STATUSES:
            return Response(TaskSerializer(task, context={"request": request}).data, status=status.HTTP_200_OK,
                            headers=replayed_headers(replayed))
        return _accepted(request, task, replayed=replayed)


class GenerationCreateAsyncApi(APIView):
    @extend_schema(
        operation_id="generation_create_async",
        summary="Create a task and return at once",
        request=TaskCreateInput,
        parameters=[IDEMPOTENCY_KEY, LOCATION, IDEMPOTENT_REPLAYED],
        responses={202: OpenApiResponse(TaskSerializer, description="Accepted; poll `Location`."),
                   409: IDEMPOTENCY_409, 422: IDEMPOTENCY_422, 429: QUOTA_429},
        tags=["generation"],
    )
    def post(self, request):
        task, replayed = _create(request)
        return _accepted(request, task, replayed=replayed)


# The status answer may be kept by the client but is asked again each time (If-None-Match).
STATUS_CACHE_CONTROL = "private, no-cache"


class GenerationStatusApi(APIView):
    @extend_schema(operation_id="generation_status", summary="A task",
                   description="The task, with `runs`: each attempt on a backend (a task moved off a backend "
                               "that went away, or retried, has several).\n\n"
                               "Every answer carries a weak `ETag`. Poll with `If-None-Match: <that ETag>`: "
                               "while nothing in the task changed (status, progress, messages, runs, images, "
                               "live frame), the answer is 304 Not Modified with no body.",
                   parameters=[TASK_ID, IF_NONE_MATCH, ETAG],
                   responses={200: TaskDetailSerializer, 304: NOT_MODIFIED}, tags=["generation"])
    def get(self, request, task_id: int):
        # By hand rather than through TaskDetailSerializer (whose answer it is, key for key:
        # tests/generation/test_status_answer.py): the statements compiled once, no model
        # instances, no serializer fields, and the 304 decided before any answer is made.
        read = generation_status_read(user=request.user, task_id=task_id)
        etag = task_status_etag(read, request)
        if etag_matches(request, etag):
            return not_modified(etag, cache_control=STATUS_CACHE_CONTROL)
        return Response(task_status_answer(read, request),
                        headers={"ETag": etag, "Cache-Control": STATUS_CACHE_CONTROL})


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


class GenerationDeleteApi(APIView):
    @extend_schema(operation_id="generation_delete", summary="Delete a task and its files", parameters=[TASK_ID],
                   responses={204: None}, tags=["generation"])
    def delete(self, request, task_id: int):
        task = generation_get(user=request.user, task_id=task_id)
        generation_delete(task=task)
        return Response(status=status.HTTP_204_NO_CONTENT)
