"""The API's one error body: {"error": {"code", "message", "fields", ...}}.

Every failure of every endpoint under /api/ answers with it, including unknown paths,
unsupported methods, bodies that are too large and server errors (see `config.urls`
and `config.middleware`), so clients parse one shape. Also here: the OpenAPI
description of those error answers. The rate limits are in `config.throttling`.
"""
from __future__ import annotations

import logging
import math

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    ValidationError as DjangoValidationError,
)
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _, gettext_lazy
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.bounds import ID_MIN, INT64_MAX
from config.db import RETRY_AFTER_SECONDS, close_lost_connection, connection_lost
from config.uploads import UploadTooLarge

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """A business-rule failure with its own code and HTTP status."""

    def __init__(self, *, code: str, message: str, status_code: int = 400, fields=None, **extra):
        self.status_code = status_code
        self.code = code
        self.fields = fields or {}
        self.extra = extra
        super().__init__(detail=message, code=code)


class ServiceError(Exception):
    """A business rule refused an operation. Raised by the apps' services (never by
    views), so pages show `message` and the API answers `status_code` with the error
    body (`code`, `message`, and `extra()`), plus `headers()`."""

    code = "error"
    status_code = status.HTTP_409_CONFLICT

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def extra(self) -> dict:
        return {}

    def headers(self) -> dict[str, str]:
        return {}


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    body = {"code": code, "message": str(message), "fields": fields or {}}
    body.update({k: v for k, v in extra.items() if v is not None})
    return {"error": body}


# The OpenAI-compatible API (generation.openai_api) answers OpenAI's clients, which read
# OpenAI's error shape; what the middleware and Django's own error handlers answer under
# its prefix (a body too large, an address too long, a lost database, a crash outside a
# view) takes that shape too. Its views answer it themselves.
OPENAI_PREFIX = "/openai/"
JSON_PREFIXES = ("/api/", OPENAI_PREFIX)


def answers_json(path: str) -> bool:
    """A path whose errors are JSON bodies (the API's, OpenAI's), not pages."""
    return path.startswith(JSON_PREFIXES)


def door_error(path: str, status_code: int, code: str, message: str, **extra) -> JsonResponse:
    """An error answer in the body of the door `path` came through: OpenAI's under
    /openai/, the API's one error body elsewhere."""
    if path.startswith(OPENAI_PREFIX):
        kind = "server_error" if status_code >= 500 else "requests" if status_code == 429 else "invalid_request_error"
        body = {"error": {"message": str(message), "type": kind, "param": None, "code": code}}
    else:
        body = error_body(code, message, **extra)
    return JsonResponse(body, status=status_code)


def _flatten(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {
            key: [str(m) for m in (value if isinstance(value, list) else [value])]
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return {"__all__": [str(m) for m in detail]}
    return {"__all__": [str(detail)]}


def validation_error_response(exc: DjangoValidationError) -> Response:
    if hasattr(exc, "error_dict"):
        fields = {k: [str(m) for e in v for m in e.messages] for k, v in exc.error_dict.items()}
    else:
        fields = {"__all__": [str(m) for m in exc.messages]}
    first = next(iter(fields.values()))[0] if fields else _("Invalid input.")
    return Response(error_body("invalid", first, fields), status=status.HTTP_400_BAD_REQUEST)


def too_large_message() -> str:
    return _("The request body is too large.")


def unavailable_message() -> str:
    return _("The service is briefly unavailable. Please try again in a moment.")


def database_lost_response(path: str = "/api/") -> JsonResponse:
    """503 for a request whose database connection died (config.db): the connection is
    closed so the next request opens a fresh one, and the client is told when to retry.
    `ConnectionLostMiddleware` runs a read once more before answering this."""
    close_lost_connection()
    response = door_error(path, 503, "unavailable", unavailable_message(), retry_after=RETRY_AFTER_SECONDS)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.database_lost = True
    return response


def api_exception_handler(exc, context):
    if connection_lost(exc):
        logger.warning("database connection lost during an API request", exc_info=exc)
        return database_lost_response()
    if isinstance(exc, DjangoValidationError):
        return validation_error_response(exc)
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, **exc.extra()), status=exc.status_code,
                        headers=exc.headers())
    if isinstance(exc, UploadTooLarge):
        return Response(error_body("too_large", exc.message, {exc.field: [exc.message]}),
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, RequestDataTooBig):
        # Raised by Django while DRF reads the body (JSON and form parsers).
        return Response(error_body("too_large", too_large_message()),
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("bad_request", _("Bad request.")), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        logger.error("unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", _("Something went wrong on our side.")),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, ApiError):
        body = error_body(exc.code, exc.detail, exc.fields, **exc.extra)
    elif isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.values()))[0] if fields else _("Invalid input.")
        body = error_body("invalid", first, fields)
    else:
        codes = exc.get_codes() if hasattr(exc, "get_codes") else "error"
        code = codes if isinstance(codes, str) else "error"
        extra = {}
        if isinstance(exc, exceptions.Throttled):
            wait = max(1, math.ceil(exc.wait or 1))
            extra["retry_after"] = wait
            response["Retry-After"] = str(wait)
        body = error_body(code, exc.detail if isinstance(exc.detail, str) else str(exc.detail), **extra)
    if response.status_code == status.HTTP_401_UNAUTHORIZED and not response.has_header("WWW-Authenticate"):
        # Also for views without authenticators (login): tell clients which scheme to use.
        response["WWW-Authenticate"] = "Bearer"
    response.data = body
    return response


# Unknown paths under /api/ may be POSTed to by clients that never had a CSRF cookie;
# they must get the 404 body, not Django's CSRF page.
@csrf_exempt
def json_404(request, exception=None):
    return door_error(request.path, 404, "not_found", _("Not found."))


def json_500(request):
    return door_error(request.path, 500, "server_error", _("Something went wrong on our side."))


def json_error(status_code: int, code: str, path: str = "/api/") -> JsonResponse:
    """The error body for the statuses Django itself answers (400 a bad Host, 403)."""
    messages = {400: _("Bad request."), 403: _("You do not have permission to perform this action.")}
    return door_error(path, status_code, code, messages.get(status_code, _("Error.")))


# --- OpenAPI ----------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text=gettext_lazy("Machine-readable error code, e.g. `invalid`, `not_found`."))
    message = serializers.CharField(help_text=gettext_lazy("A human-readable message in the request's language."))
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text=gettext_lazy("Messages per input field (`__all__` for the request as a whole); empty if none."),
    )
    retry_after = serializers.IntegerField(
        required=False, help_text=gettext_lazy("Seconds to wait before trying again (429 and 503 only).")
    )
    resets_at = serializers.DateTimeField(required=False, help_text=gettext_lazy("When the daily quota resets."))
    limit = serializers.IntegerField(required=False, help_text=gettext_lazy("The daily image quota."))
    used = serializers.IntegerField(required=False, help_text=gettext_lazy("Images used today."))


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer of the API."""

    error = ErrorDetailSerializer()


def _example(name: str, code: str, message: str, status_code: int, fields=None, **extra) -> OpenApiExample:
    return OpenApiExample(name, value=error_body(code, message, fields, **extra), status_codes=[str(status_code)],
                          response_only=True)


ERROR_EXAMPLES = {
    400: _example("Invalid input", "invalid", "This field is required.", 400,
                  {"prompt": ["This field is required."]}),
    401: _example("Not authenticated", "not_authenticated", "Authentication credentials were not provided.", 401),
    403: _example("Forbidden", "permission_denied", "You do not have permission to perform this action.", 403),
    404: _example("Not found", "not_found", "Not found.", 404),
    409: _example("Conflict", "conflict", "This task has already finished (completed).", 409),
    413: _example("Too large", "too_large", "The request body is too large.", 413),
    414: _example("URI too long", "uri_too_long", "The address of this request is too long: at most 4094 characters.",
                  414),
    415: _example("Unsupported media type", "unsupported_media_type",
                  'Unsupported media type "text/plain" in request.', 415),
    429: _example("Throttled", "throttled", "Request was throttled. Expected available in 12 seconds.", 429,
                  retry_after=12),
    500: _example("Server error", "server_error", "Something went wrong on our side.", 500),
    503: _example("Unavailable", "unavailable", "The service is briefly unavailable. Please try again in a moment.",
                  503, retry_after=2),
}
ERROR_DESCRIPTIONS = {
    400: gettext_lazy("Invalid input; `fields` names each problem."),
    401: gettext_lazy("Missing, invalid or expired token (`WWW-Authenticate: Bearer`)."),
    403: gettext_lazy("Not allowed."),
    404: gettext_lazy("No such object, or it belongs to someone else."),
    409: gettext_lazy("The object is not in a state that allows this."),
    413: gettext_lazy("The request body is too large."),
    414: gettext_lazy("The URI (path and query) is too long."),
    415: gettext_lazy("Unsupported request content type."),
    429: gettext_lazy("Too many requests; wait `retry_after` seconds (also in `Retry-After`)."),
    500: gettext_lazy("Server error."),
    503: gettext_lazy("The database was briefly out of reach (a restart, a failover). Try again after "
                      "`retry_after` seconds (also in `Retry-After`); a write answered so may have been done "
                      "(look before repeating it)."),
}


def error_response(status_code: int, description=None, examples: list[OpenApiExample] | None = None):
    """The documented error answer for one status code (for `extend_schema(responses=...)`)."""
    return OpenApiResponse(
        ErrorSerializer,
        description=description or ERROR_DESCRIPTIONS.get(status_code, ""),
        examples=examples if examples is not None else [ERROR_EXAMPLES[status_code]]
        if status_code in ERROR_EXAMPLES else [],
    )


class EaselAutoSchema(AutoSchema):
    """drf-spectacular's schema plus the error answers any operation can give.

    Views document their own successes and business errors (409, quota 429); this adds
    the cross-cutting ones so that every operation, including views written later,
    lists the error body: 401/403 for authenticated views, 404 with a path parameter,
    400/413/415 on writes, 414 (URI too long), 429 (rate limits), and 500 and 503 (the
    database out of reach) everywhere.
    It also states the rules every parameter follows (`_parameter_rules`).
    """

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        for parameter in parameters:
            self._parameter_rules(parameter)
        if any(p["in"] == "query" for p in parameters) and "400" not in operation["responses"]:
            # A malformed query parameter is a 400 naming it (config.api_input).
            operation["responses"]["400"] = self._get_response_for_code(
                error_response(400), "400", ["application/json"], "response"
            )
        return operation

    @staticmethod
    def _parameter_rules(parameter: dict) -> None:
        schema = parameter.get("schema", {})
        if parameter["in"] == "path" and schema.get("type") == "integer":
            # Ids: larger than 64 bits is a 404 (config.middleware), as is no such object.
            schema.setdefault("minimum", ID_MIN)
            schema.setdefault("maximum", INT64_MAX)
        elif parameter["in"] == "query" and not parameter.get("required"):
            # DRF reads `?name=` as no value, and so do config.api_input and the views.
            parameter["allowEmptyValue"] = True

    def get_serializer_name(self, serializer, direction) -> str:
        # The house style nests `InputSerializer` / `OutputSerializer` in each API view;
        # name their components after the view (AuthLoginApi.InputSerializer -> AuthLoginInput)
        # so that they do not collide.
        qualname = type(serializer).__qualname__
        if "." in qualname and "<locals>" not in qualname:
            outer, inner = qualname.split(".")[-2:]
            for suffix in ("Api", "View"):
                outer = outer.removesuffix(suffix)
            return outer + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            key = str(code)
            if key not in responses:
                responses[key] = self._get_response_for_code(
                    error_response(code), key, ["application/json"], direction
                )
        return responses

    def _error_codes(self) -> list[int]:
        codes = [414, 500, 503]
        view = self.view
        if view.get_authenticators():
            codes.append(401)  # a bad or expired token is refused even on open views
        if not all(isinstance(p, AllowAny) for p in view.get_permissions()):
            codes += [401, 403]
        if "{" in self.path:
            codes.append(404)
        if self.method in ("POST", "PUT", "PATCH"):
            # Also when a view reads request.data without declaring a body.
            codes += [400, 413, 415]
        if view.get_throttles():
            codes.append(429)
        return sorted(set(codes))
