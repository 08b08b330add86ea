"""Staff pages that live under /admin/ beside the stock admin.

Included in config/urls.py *before* `admin.site.urls`, whose catch-all would
otherwise answer these paths with a 404.
"""
from django.urls import path

from .dashboard import dashboard

urlpatterns = [
    path("dashboard/", dashboard, name="admin-dashboard"),
]
