"""Error pages: the API's error body under /api/, Easel's own pages elsewhere (templates/4xx.html)."""
from django.views import defaults

from config import api_errors


def _api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _api(request):
        return api_errors.json_error(400, "bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _api(request):
        return api_errors.json_error(403, "permission_denied")
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _api(request):
        return api_errors.json_404(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _api(request):
        return api_errors.json_500(request)
    return defaults.server_error(request)
