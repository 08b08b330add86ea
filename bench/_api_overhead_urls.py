"""URLconf of bench/api_overhead.py's gunicorn: Easel's URLs, plus one bare view that the
product never has. Not a benchmark itself (see bench/_api_overhead_site.py).

The bare view is the yardstick: a plain Django view that reads one row and answers it as
JSON, with no authentication, no DRF and no serializer, behind the same middleware and in
the same gunicorn as the API it is compared with.
"""
from django.http import JsonResponse
from django.urls import include, path

from generation.models import GenerationTask

BARE_FIELDS = ("id", "user_id", "prompt", "model_name", "status", "created_at", "completed_at")


def bare_task(request, task_id: int):
    row = GenerationTask.objects.filter(pk=task_id).values(*BARE_FIELDS).first()
    return JsonResponse(row or {}, status=200 if row else 404)


urlpatterns = [
    path("bench/bare/<int:task_id>", bare_task),
    path("", include("config.urls")),
]
