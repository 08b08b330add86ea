"""The API's URLs under /api/v1/ (the sign-in endpoints are accounts.api_urls, the
template catalog models_catalog.api_urls). Paths have no trailing slash, as existing
clients call them."""
from django.urls import path

from ..ops.health import HealthApi, LivenessApi, ReadinessApi
from . import catalog, events, files, history, parameters, tasks, uploads, webhooks

urlpatterns = [
    path("generation/create", tasks.GenerationCreateApi.as_view(), name="api-generation-create"),
    path("generation/create-async", tasks.GenerationCreateAsyncApi.as_view(), name="api-generation-create-async"),
    path("generation/status/<int:task_id>", tasks.GenerationStatusApi.as_view(), name="api-generation-status"),
    path("generation/result/<int:task_id>", tasks.GenerationResultApi.as_view(), name="api-generation-result"),
    path("generation/preview/<int:task_id>", files.GenerationPreviewApi.as_view(), name="api-generation-preview"),
    path("generation/history", history.GenerationHistoryApi.as_view(), name="api-generation-history"),
    path("generation/images/<int:image_id>/file", files.GenerationImageFileApi.as_view(),
         name="api-generation-image-file"),
    path("generation/images/<int:image_id>/thumbnail", files.GenerationImageThumbnailApi.as_view(),
         name="api-generation-image-thumbnail"),
    path("generation/parameters-from-png", parameters.ParametersFromPngApi.as_view(),
         name="api-generation-parameters-from-png"),
    path("generation/<int:task_id>/cancel", tasks.GenerationCancelApi.as_view(), name="api-generation-cancel"),
    path("generation/<int:task_id>/retry", tasks.GenerationRetryApi.as_view(), name="api-generation-retry"),
    path("generation/<int:task_id>", tasks.GenerationDeleteApi.as_view(), name="api-generation-delete"),
    path("events", events.event_stream, name="api-events"),
    path("models", catalog.ModelListApi.as_view(), name="api-models"),
    path("quota", catalog.QuotaApi.as_view(), name="api-quota"),
    path("uploads", uploads.UploadListCreateApi.as_view(), name="api-uploads"),
    path("uploads/from-result/<int:image_id>", uploads.UploadFromResultApi.as_view(),
         name="api-upload-from-result"),
    path("uploads/<int:source_id>", uploads.UploadDetailApi.as_view(), name="api-upload-detail"),
    path("uploads/<int:source_id>/file", uploads.UploadFileApi.as_view(), name="api-upload-file"),
    path("webhooks/deliveries", webhooks.WebhookDeliveryListApi.as_view(), name="api-webhook-deliveries"),
    path("webhooks/deliveries/<int:delivery_id>", webhooks.WebhookDeliveryDetailApi.as_view(),
         name="api-webhook-delivery"),
    path("webhooks/secret", webhooks.WebhookSecretApi.as_view(), name="api-webhook-secret"),
    path("webhooks/default", webhooks.WebhookDefaultApi.as_view(), name="api-webhook-default"),
    path("health", HealthApi.as_view(), name="api-health"),
    path("health/live", LivenessApi.as_view(), name="api-health-live"),
    path("health/ready", ReadinessApi.as_view(), name="api-health-ready"),
]
