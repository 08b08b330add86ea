"""A test URLconf: the real URLs plus views that fail, to check the error bodies and pages."""
from django.core.exceptions import PermissionDenied
from django.urls import path
from rest_framework.views import APIView

from config.urls import (  # noqa: F401
    handler400,
    handler403,
    handler404,
    handler500,
    urlpatterns as real_urlpatterns,
)


class BoomApi(APIView):
    def get(self, request):
        raise RuntimeError("boom in an API view")


def boom_plain(request):
    raise RuntimeError("boom in a plain view")


def deny_plain(request):
    raise PermissionDenied("staff only")


urlpatterns = [
    path("api/v1/test-boom", BoomApi.as_view()),
    path("api/v1/test-boom-plain", boom_plain),
    path("test-boom", boom_plain),
    path("test-deny", deny_plain),
    *real_urlpatterns,
]
