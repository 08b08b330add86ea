"""OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, with the status
codes OpenAI uses, for every failure of the /openai/ endpoints.

These endpoints answer OpenAI's clients, which read OpenAI's shape (the `openai` package
raises `AuthenticationError`, `RateLimitError`, `NotFoundError`, … from the status and
shows `message`), so they do not use the REST API's body (config.api_errors).

`x-should-retry: false` tells OpenAI's SDKs not to repeat a request on their own where a
repeat cannot help or would cost the user a second task: a quota used up, a task that
failed or is still running. A throttled request (nothing was created) may be repeated.
"""
from __future__ import annotations

import logging
import math

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from config.api_errors import ServiceError
from config.db import RETRY_AFTER_SECONDS, close_lost_connection, connection_lost
from config.uploads import UploadTooLarge

from ..errors import QuotaExceeded

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
NO_RETRY = {"x-should-retry": "false"}


class OpenAIError(Exception):
    """A refusal answered in OpenAI's shape."""

    def __init__(self, message: str, *, status_code: int = 400, type: str = INVALID_REQUEST,
                 param: str | None = None, code: str | None = None, headers: dict | None = None, **extra):
        super().__init__(message)
        self.message, self.status_code, self.type = str(message), status_code, type
        self.param, self.code, self.headers, self.extra = param, code, headers or {}, extra


def error_body(message: str, *, type: str = INVALID_REQUEST, param: str | None = None, code: str | None = None,
               **extra) -> dict:
    return {"error": {"message": str(message), "type": type, "param": param, "code": code, **extra}}


def error_answer(exc: OpenAIError) -> Response:
    body = error_body(exc.message, type=exc.type, param=exc.param, code=exc.code, **exc.extra)
    return Response(body, status=exc.status_code, headers=exc.headers)


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(
        _("The model '%(name)s' does not exist or you do not have access to it.") % {"name": name},
        status_code=status.HTTP_404_NOT_FOUND, param="model", code="model_not_found",
    )


def _as_openai(exc) -> OpenAIError | None:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, QuotaExceeded):
        return OpenAIError(exc.message, status_code=429, type="insufficient_quota", code="insufficient_quota",
                           headers={**exc.headers(), **NO_RETRY})
    if isinstance(exc, ServiceError):
        return OpenAIError(exc.message, status_code=exc.status_code, code=exc.code)
    if isinstance(exc, UploadTooLarge):
        return OpenAIError(exc.message, status_code=413, param=exc.field, code="too_large")
    if isinstance(exc, RequestDataTooBig):
        return OpenAIError(_("The request body is too large."), status_code=413, code="too_large")
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = (_("You didn't provide an API key. Send an Easel API token as 'Authorization: Bearer <token>'.")
                   if isinstance(exc, exceptions.NotAuthenticated)
                   else _("Incorrect API key provided: use a valid Easel API token."))
        return OpenAIError(message, status_code=401, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, math.ceil(exc.wait or 1))
        return OpenAIError(
            _("Rate limit reached: too many requests. Try again in %(seconds)d seconds.") % {"seconds": wait},
            status_code=429, type="requests", code="rate_limit_exceeded", headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, (Http404, exceptions.NotFound)):
        return OpenAIError(_("Not found."), status_code=404, code="not_found")
    if isinstance(exc, exceptions.MethodNotAllowed):
        return OpenAIError(str(exc.detail), status_code=405, code="method_not_allowed")
    if isinstance(exc, exceptions.PermissionDenied):
        return OpenAIError(str(exc.detail), status_code=403, code="permission_denied")
    if isinstance(exc, (exceptions.ParseError, exceptions.UnsupportedMediaType, SuspiciousOperation)):
        detail = getattr(exc, "detail", None) or _("Bad request.")
        return OpenAIError(str(detail), status_code=400, code="invalid_request")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict) and detail:
            param, messages = next(iter(detail.items()))
            message = messages[0] if isinstance(messages, list) and messages else messages
            return OpenAIError(str(message), param=str(param), code="invalid_value")
        return OpenAIError(str(detail[0] if isinstance(detail, list) and detail else detail), code="invalid_value")
    if isinstance(exc, DjangoValidationError):
        fields = getattr(exc, "message_dict", None) or {None: exc.messages}
        param, messages = next(iter(fields.items()))
        return OpenAIError(messages[0] if messages else _("Invalid input."), param=param, code="invalid_value")
    return None


def openai_exception_handler(exc, context):
    """DRF's exception handler for the /openai/ views (`OpenAIView.get_exception_handler`)."""
    if connection_lost(exc):
        logger.warning("database connection lost during an OpenAI API request", exc_info=exc)
        close_lost_connection()
        return Response(
            error_body(_("The service is briefly unavailable. Please try again in a moment."), type="server_error",
                       code="unavailable"),
            status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    known = _as_openai(exc)
    if known is not None:
        return error_answer(known)
    logger.error("unhandled OpenAI API error", exc_info=exc)
    return Response(error_body(_("Something went wrong on our side."), type="server_error", code="server_error"),
                    status=500)


# Unknown paths under /openai/ may be POSTed to by clients that never had a CSRF cookie.
@csrf_exempt
def not_found(request, *args, **kwargs):
    return JsonResponse(error_body(_("Unknown request URL: %(method)s %(path)s.")
                                   % {"method": request.method, "path": request.path},
                                   code="unknown_url"), status=404)
