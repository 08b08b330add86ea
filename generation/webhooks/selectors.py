"""Reads on webhook deliveries: each user sees their own (staff see all)."""
from __future__ import annotations

from django.http import Http404

from ..models import WebhookDelivery


def webhook_delivery_list(*, user, task_id: int | None = None):
    qs = WebhookDelivery.objects.filter(user=user)
    if task_id is not None:
        qs = qs.filter(task_id=task_id)
    return qs.order_by("-created_at", "-id")


def webhook_delivery_get(*, user, delivery_id: int) -> WebhookDelivery:
    """The delivery if the user owns it or is staff; Http404 otherwise (no existence leak)."""
    qs = WebhookDelivery.objects.all()
    if not user.is_staff:
        qs = qs.filter(user=user)
    delivery = qs.filter(pk=delivery_id).first()
    if delivery is None:
        raise Http404
    return delivery
