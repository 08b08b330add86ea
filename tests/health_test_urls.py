"""config.urls plus the health endpoints (until config/urls.py includes config.health)."""
from django.urls import include, path

from config import urls as project_urls
from config.health import HealthApi

urlpatterns = [
    # Before the project's patterns: its catch-all answers 404 for anything else under /api/.
    path("api/v1/health/", include("config.health")),
    path("api/v1/health", HealthApi.as_view(), name="api-health"),
    *project_urls.urlpatterns,
]

handler404 = project_urls.handler404
handler500 = project_urls.handler500
