"""Middleware that keeps every answer under /api/ in the API's error body.

DRF's exception handler covers what happens inside an API view; this covers the rest:
a body over DATA_UPLOAD_MAX_MEMORY_SIZE (Django would answer 400 once something reads
it), exceptions in plain views or URL resolution, and Django's own HTML error pages
(CSRF failure, handler400/403) for paths under /api/.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.utils.translation import gettext as _

from config.api_errors import error_body, too_large_message

logger = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class ApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _is_api(request):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            content_type = request.META.get("CONTENT_TYPE", "")
            # Multipart bodies are left to the parser: Django counts only their
            # non-file fields against the limit, and uploads have their own.
            if limit is not None and not content_type.startswith("multipart/") and _declared_length(request) > limit:
                return self._too_large()
        response = self.get_response(request)
        if _is_api(request):
            response = self._as_error_body(response)
        return response

    def process_exception(self, request, exception):
        if not _is_api(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return self._too_large()
        logger.error("unhandled API error on %s %s", request.method, request.path, exc_info=exception)
        return JsonResponse(error_body("server_error", _("Something went wrong on our side.")), status=500)

    @staticmethod
    def _too_large() -> JsonResponse:
        return JsonResponse(error_body("too_large", too_large_message()), status=413)

    @staticmethod
    def _as_error_body(response):
        """Replace a non-JSON error answer (Django's HTML pages) by the error body."""
        if response.status_code < 400 or getattr(response, "streaming", False):
            return response
        content_type = response.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return response
        status_code = response.status_code
        if status_code >= 500:
            code, message = "server_error", _("Something went wrong on our side.")
        else:
            code = _DEFAULT_CODES.get(status_code, "error")
            message = response.reason_phrase
            if status_code == 403:
                message = _("You do not have permission to perform this action.")
            elif status_code == 404:
                message = _("Not found.")
            elif status_code == 400:
                message = _("Bad request.")
        replacement = JsonResponse(error_body(code, message), status=status_code)
        for header in ("Allow", "Retry-After", "WWW-Authenticate", "Vary"):
            if response.has_header(header):
                replacement[header] = response[header]
        return replacement


__all__ = ["ApiErrorMiddleware"]
