"""`/metrics`, at the site's root where Prometheus looks by default (config/urls.py)."""
from django.urls import path

from .metrics_view import metrics

urlpatterns = [
    path("metrics", metrics, name="metrics"),
]
