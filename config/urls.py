from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config import api_errors

# The project's URLs. Apps are included by name, so this package imports none of them.
urlpatterns = [
    path("admin/", include("generation.ops.admin_urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/auth/", include("accounts.api_urls")),
    path("api/v1/", include("generation.api.urls")),
    path("api/v1/", include("models_catalog.api_urls")),
    # OpenAPI 3 from the code; the docs pages load their assets from our static files.
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # Prometheus' scrape (off unless EASEL_METRICS_TOKEN or EASEL_METRICS_ALLOW is set).
    path("", include("generation.ops.metrics_urls")),
    # Anything else under /api/ answers with the API's error body, never an HTML page.
    re_path(r"^api/", api_errors.json_404),
    # The OpenAI-compatible Images API (a client's base_url: /openai/v1), in OpenAI's shapes.
    path("openai/", include("generation.openai_api.urls")),
    path("", include("generation.web.urls")),
]

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
