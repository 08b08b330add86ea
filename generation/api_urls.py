from django.urls import path

from config.health import HealthApi

from . import api

urlpatterns = [
    path("generation/create", api.GenerationCreateApi.as_view(), name="api-generation-create"),
    path("generation/create-async", api.GenerationCreateAsyncApi.as_view(), name="api-generation-create-async"),
    path("generation/status/<int:task_id>", api.GenerationStatusApi.as_view(), name="api-generation-status"),
    path("generation/result/<int:task_id>", api.GenerationResultApi.as_view(), name="api-generation-result"),
    path("generation/preview/<int:task_id>", api.GenerationPreviewApi.as_view(), name="api-generation-preview"),
    path("generation/history", api.GenerationHistoryApi.as_view(), name="api-generation-history"),
    path("generation/images/<int:image_id>/file", api.GenerationImageFileApi.as_view(), name="api-generation-image-file"),
    path(
        "generation/images/<int:image_id>/thumbnail",
        api.GenerationImageThumbnailApi.as_view(),
        name="api-generation-image-thumbnail",
    ),
    path("generation/<int:task_id>/cancel", api.GenerationCancelApi.as_view(), name="api-generation-cancel"),
    path("generation/<int:task_id>/retry", api.GenerationRetryApi.as_view(), name="api-generation-retry"),
    path("generation/<int:task_id>", api.GenerationDeleteApi.as_view(), name="api-generation-delete"),
    path("models", api.ModelListApi.as_view(), name="api-models"),
    path("quota", api.QuotaApi.as_view(), name="api-quota"),
    path("health", HealthApi.as_view(), name="api-health"),
]
