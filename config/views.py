"""Error pages: JSON under /api/, HTML elsewhere."""
from django.views import defaults

from config import api_errors


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return api_errors.json_404(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return api_errors.json_500(request)
    return defaults.server_error(request)
