"""The `Idempotency-Key` header on the API's create endpoints (generation.idempotency),
and its OpenAPI description, for every view that creates tasks."""
from __future__ import annotations

from collections.abc import Callable

from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from config.api_errors import error_response

from ..idempotency import body_fingerprint, idempotency_key_clean, with_idempotency
from ..models import GenerationTask

REPLAYED_HEADER = "Idempotent-Replayed"

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description=(
        "A unique value you choose per request (a UUID), 1 to 255 printable ASCII characters, bare or as a "
        "quoted string. Retrying with the same key and the same body within 24 hours answers the task the "
        "first request created (no second task, no second quota charge; header `Idempotent-Replayed: true`). "
        "The same key with a different body: 422 `idempotency_key_reused`. Empty or too long: 400 "
        "`idempotency_key_invalid`. Keys are per user."
    ),
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    REPLAYED_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, response=True,
    description="`true` when the answer is a replay of an earlier request with the same `Idempotency-Key`.",
)


def idempotent_create(
    request, *, operation: str, create_fn: Callable[[], GenerationTask]
) -> tuple[GenerationTask, bool]:
    """Create through `create_fn`, once per (user, the request's Idempotency-Key); answers
    (task, replayed). `operation` names the kind of create, so one key cannot stand for
    two different kinds of request."""
    key = idempotency_key_clean(request.headers.get("Idempotency-Key"))
    return with_idempotency(
        user=request.user, key=key, fingerprint=body_fingerprint(operation, request.data), create_fn=create_fn
    )


def replayed_headers(replayed: bool) -> dict[str, str]:
    return {REPLAYED_HEADER: "true"} if replayed else {}


IDEMPOTENCY_422 = error_response(
    422,
    description=gettext_lazy("The Idempotency-Key was already used for a different request."),
    examples=[OpenApiExample(
        "Key reused", response_only=True, status_codes=["422"],
        value={"error": {"code": "idempotency_key_reused", "fields": {}, "message":
                         "This Idempotency-Key was already used for a different request. Send a new key for a "
                         "new request."}},
    )],
)


# Only when the key's task was deleted while a retry read it: a concurrent request with the
# key otherwise waits for the first (generation.idempotency).
IDEMPOTENCY_409 = error_response(
    409, description=gettext_lazy("Another request with this Idempotency-Key is in progress; retry in a moment."))
