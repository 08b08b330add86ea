from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config import api_errors

urlpatterns = [
    path("admin/", include("config.admin_urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/auth/", include("accounts.api_urls")),
    path("api/v1/", include("generation.api_urls")),
    path("api/v1/", include("generation.upload_api_urls")),
    path("api/v1/", include("models_catalog.api_urls")),
    path("api/v1/", include("generation.webhook_api_urls")),
    # OpenAPI 3 from the code; the docs pages load their assets from our static files.
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # Anything else under /api/ answers with the API's error body, never an HTML page.
    path("api/v1/health/", include("config.health")),
    re_path(r"^api/", api_errors.json_404),
    path("", include("generation.urls")),
]

handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
