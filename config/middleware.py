"""Middleware that keeps every answer under /api/ in the API's error body, and the limits
every request meets before a view runs.

DRF's exception handler covers what happens inside an API view; `ApiErrorMiddleware`
covers the rest: a body over DATA_UPLOAD_MAX_MEMORY_SIZE (Django would answer 400 once
something reads it), exceptions in plain views or URL resolution, and Django's own HTML
error pages (CSRF failure, handler400/403) for paths under /api/.

`RequestLimitsMiddleware` refuses an over-long URI (414) and an id in the path beyond
what the database can hold (404), for pages and the API alike.

`ConnectionLostMiddleware` answers a request whose database connection died (config.db)
with 503 and Retry-After, the error body under /api/ and Easel's page elsewhere, after
running a read (GET, HEAD) once more on a fresh connection.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from config.api_errors import answers_json, database_lost_response, door_error, too_large_message
from config.bounds import INT64_MAX
from config.db import RETRY_AFTER_SECONDS, close_lost_connection, connection_lost
from config.uploads import MULTIPART_ALLOWANCE

logger = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "throttled",
}


def _is_api(request) -> bool:
    return answers_json(request.path_info)


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class ApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _is_api(request) and _declared_length(request) > self._body_limit(request):
            return self._too_large(request)
        response = self.get_response(request)
        if _is_api(request):
            response = self._as_error_body(request, response)
        return response

    def process_exception(self, request, exception):
        if not _is_api(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return self._too_large(request)
        logger.error("unhandled API error on %s %s", request.method, request.path, exc_info=exception)
        return door_error(request.path_info, 500, "server_error", _("Something went wrong on our side."))

    @staticmethod
    def _body_limit(request) -> float:
        if request.META.get("CONTENT_TYPE", "").startswith("multipart/"):
            # Django counts only the non-file fields of a multipart body against
            # DATA_UPLOAD_MAX_MEMORY_SIZE; the API's one upload (a picture) is refused
            # here from its declared size, before any of it is read, and a body that
            # understates its size is stopped while it streams (config.uploads).
            return settings.EASEL_MAX_UPLOAD_BYTES + MULTIPART_ALLOWANCE
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return float("inf") if limit is None else limit

    @staticmethod
    def _too_large(request) -> JsonResponse:
        return door_error(request.path_info, 413, "too_large", too_large_message())

    @staticmethod
    def _as_error_body(request, response):
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
        replacement = door_error(request.path_info, status_code, code, message)
        for header in ("Allow", "Retry-After", "WWW-Authenticate", "Vary"):
            if response.has_header(header):
                replacement[header] = response[header]
        return replacement


def database_lost_page() -> HttpResponse:
    """Easel's 503 page. Rendered without the request: its context processors would
    read the user from the database that just went away."""
    close_lost_connection()
    response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.database_lost = True
    return response


class ConnectionLostMiddleware:
    """A database connection that died under a request (a restart, a failover,
    `pg_terminate_backend` of a kept connection) is not a 500.

    The dead connection is closed (config.db) and the request answered 503 with
    Retry-After: the API's error body (by the API's exception handler, or here for plain
    views), Easel's page elsewhere. A read (GET, HEAD) is first run once more on a fresh
    connection, which usually answers it. A write is not: ATOMIC_REQUESTS is off, so
    part of it may have been committed before the cut, and only the client can tell
    whether to send it again.

    Placed after ApiErrorMiddleware, so that its `process_exception` sees a view's
    exception first, and before the session-reading middleware it runs again.
    """

    SAFE_METHODS = ("GET", "HEAD")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(response, "database_lost", False) and request.method in self.SAFE_METHODS:
            logger.warning("database connection lost on %s %s; running it once more", request.method, request.path)
            response = self.get_response(request)
        return response

    def process_exception(self, request, exception):
        if not connection_lost(exception):
            return None
        logger.warning("database connection lost on %s %s", request.method, request.path, exc_info=exception)
        return database_lost_response(request.path_info) if _is_api(request) else database_lost_page()


def _uri_length(request) -> int:
    # gunicorn passes the request target as the client sent it; elsewhere (tests, other
    # servers) the path and query, escaped again, come to the same length.
    return len(request.META.get("RAW_URI") or request.get_full_path())


class RequestLimitsMiddleware:
    """The URI length limit and the range of ids in paths, before any view runs.

    gunicorn answers a request line over its `limit_request_line` with its own HTML page;
    deploy/gunicorn.conf.py lets lines through up to gunicorn's maximum so that the
    lower EASEL_MAX_URI_LENGTH is enforced here: the error body under /api/, a page
    elsewhere.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _uri_length(request) > settings.EASEL_MAX_URI_LENGTH:
            return self._uri_too_long(request)
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # `<int:…>` matches any number of digits; one past 64 bits would overflow the
        # database driver in the lookups Django does not guard (related ids, raw SQL).
        if any(isinstance(v, int) and abs(v) > INT64_MAX for v in (*view_args, *view_kwargs.values())):
            if _is_api(request):
                return door_error(request.path_info, 404, "not_found", _("Not found."))
            raise Http404
        return None

    @staticmethod
    def _uri_too_long(request) -> HttpResponse:
        limit = settings.EASEL_MAX_URI_LENGTH
        if _is_api(request):
            message = _("The address of this request is too long: at most %(limit)d characters.") % {"limit": limit}
            return door_error(request.path_info, 414, "uri_too_long", message)
        return HttpResponse(render_to_string("414.html", {"limit": limit}), status=414)


__all__ = ["ApiErrorMiddleware", "ConnectionLostMiddleware", "RequestLimitsMiddleware", "database_lost_page"]
