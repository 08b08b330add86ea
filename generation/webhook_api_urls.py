from django.urls import path

from . import webhook_api

urlpatterns = [
    path("webhooks/deliveries", webhook_api.WebhookDeliveryListApi.as_view(), name="api-webhook-deliveries"),
    path(
        "webhooks/deliveries/<int:delivery_id>",
        webhook_api.WebhookDeliveryDetailApi.as_view(),
        name="api-webhook-delivery",
    ),
    path("webhooks/secret", webhook_api.WebhookSecretApi.as_view(), name="api-webhook-secret"),
    path("webhooks/default", webhook_api.WebhookDefaultApi.as_view(), name="api-webhook-default"),
]
