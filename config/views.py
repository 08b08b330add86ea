"""Error pages: the API's error body under /api/, Easel's own pages elsewhere (templates/4xx.html)."""
import sys

from django.views import defaults

from config import api_errors
from config.db import connection_lost
from config.middleware import database_lost_page


def _api(request) -> bool:
    return api_errors.answers_json(request.path)


def bad_request(request, exception=None):
    if _api(request):
        return api_errors.json_error(400, "bad_request", request.path)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _api(request):
        return api_errors.json_error(403, "permission_denied", request.path)
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _api(request):
        return api_errors.json_404(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    # Django calls this inside its `except`: a database connection that died outside a
    # view (the session saved after it) is a 503, as in a view (ConnectionLostMiddleware).
    if connection_lost(sys.exc_info()[1]):
        return api_errors.database_lost_response(request.path) if _api(request) else database_lost_page()
    if _api(request):
        return api_errors.json_500(request)
    return defaults.server_error(request)
