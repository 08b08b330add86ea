"""config.urls plus the webhook API, until the lead includes it in config/urls.py."""
from django.urls import include, path

urlpatterns = [
    # Before config.urls: its catch-all answers 404 for anything else under /api/.
    path("api/v1/", include("generation.webhook_api_urls")),
    path("", include("config.urls")),
]
