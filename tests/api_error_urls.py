"""A test URLconf: the real URLs plus views that fail, to check the 500 error body."""
from django.urls import path
from rest_framework.views import APIView

from config.urls import handler404, handler500, urlpatterns as real_urlpatterns  # noqa: F401


class BoomApi(APIView):
    def get(self, request):
        raise RuntimeError("boom in an API view")


def boom_plain(request):
    raise RuntimeError("boom in a plain view")


urlpatterns = [
    path("api/v1/test-boom", BoomApi.as_view()),
    path("api/v1/test-boom-plain", boom_plain),
    *real_urlpatterns,
]
