"""Writes on webhooks: the delivery of a task's outcome, and a token's default callback URL.

When a task ends, one `WebhookDelivery` row is stored per (task, outcome, retry round)
and a django-q2 job POSTs it (`generation.webhooks.delivery`). The row is the truth:
attempts, the last answer and the time of the next attempt live on it, so a lost job
is picked up again by `webhook_retry_due` (run every minute by the studio tick). The
payload is the task exactly as the API shows it (`generation.representation`).
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from urllib.parse import urljoin

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import CharField, Exists, OuterRef, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from ..models import TERMINAL_STATUSES, GenerationTask, WebhookDelivery
from ..queue import enqueue
from ..representation import TaskSerializer
from .targets import callback_url_validate

logger = logging.getLogger(__name__)

EVENTS = {status: f"task.{status}" for status in TERMINAL_STATUSES}


class _PublicBase:
    """Stands in for a request so the serializer writes absolute URLs when it can."""

    def __init__(self, base: str):
        self.base = base.rstrip("/") + "/"

    def build_absolute_uri(self, path: str) -> str:
        return urljoin(self.base, path.lstrip("/"))


def _task_payload(task: GenerationTask, event: str) -> dict:
    base = settings.EASEL_PUBLIC_URL
    context = {"request": _PublicBase(base)} if base else {}
    data = TaskSerializer(task, context=context).data
    # Through DRF's encoder, so dates and decimals are exactly what the API shows.
    data = json.loads(JSONRenderer().render(data))
    when = task.completed_at or timezone.now()
    return {"type": event, "timestamp": when.isoformat().replace("+00:00", "Z"), "data": data}


def webhook_enqueue_for_task(*, task_id: int) -> WebhookDelivery | None:
    """Store and queue the webhook for a task that has ended; None when there is none to send.

    Idempotent: the message id is derived from the task, its outcome and its retry
    round, so calling this again (a redelivered job) returns the existing delivery.
    """
    task = (
        GenerationTask.objects.select_related("api_token").prefetch_related("images").filter(pk=task_id).first()
    )
    if task is None or task.status not in TERMINAL_STATUSES or not task.callback_url:
        return None
    event = EVENTS[task.status]
    message_id = _message_id(task)
    existing = WebhookDelivery.objects.filter(message_id=message_id).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                user_id=task.user_id,
                task=task,
                api_token=task.api_token,
                event=event,
                url=task.callback_url,
                message_id=message_id,
                payload=_task_payload(task, event),
                # Due now: if the enqueue below is lost, the schedule still sends it.
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:  # a concurrent call stored it first
        return WebhookDelivery.objects.get(message_id=message_id)
    delivery_id = delivery.pk
    transaction.on_commit(lambda: delivery_enqueue(delivery_id))
    return delivery


def _message_id(task: GenerationTask) -> str:
    """One webhook per task, outcome and retry round (`_MESSAGE_ID` is the same in SQL)."""
    return f"msg_task{task.pk}_{task.status}_{task.retries}"


_MESSAGE_ID = Concat(
    Value("msg_task"), Cast("pk", CharField()), Value("_"), "status", Value("_"), Cast("retries", CharField()),
    output_field=CharField(),
)


def delivery_enqueue(delivery_id: int) -> None:
    enqueue("webhook_deliver", delivery_id, group="webhooks")


def webhook_default_set(*, token, url: str) -> None:
    """Set (or clear, with a blank URL) the default callback of one API token."""
    url = (url or "").strip()
    if url:
        try:
            callback_url_validate(url)
        except ValidationError as exc:
            raise ValidationError({"url": exc.messages}) from None
    token.webhook_url = url
    token.save(update_fields=["webhook_url"])


# How far back the sweep looks for finished tasks without their webhook, and how long it
# leaves the `generation_finished` job to create it first.
SWEEP_WINDOW = timedelta(days=1)
SWEEP_GRACE = timedelta(seconds=60)
SWEEP_BATCH = 200


def webhooks_sweep(*, now=None) -> int:
    """Create the webhook of every task that ended with a callback URL but has none yet
    (its `generation_finished` job was lost: a worker killed, a database connection cut).
    Run by the tick; `webhook_enqueue_for_task` is idempotent. Returns how many it made."""
    now = now or timezone.now()
    # Made or not is read from the message id the task's webhook would carry, not from
    # the clocks: a delivery stored by a host whose clock runs behind the one that
    # finished the task is still its webhook (and is not looked for again every tick).
    sent = WebhookDelivery.objects.filter(message_id=OuterRef("webhook_message_id"))
    missing = (
        GenerationTask.objects.annotate(webhook_message_id=_MESSAGE_ID).filter(
            status__in=TERMINAL_STATUSES, completed_at__gte=now - SWEEP_WINDOW, completed_at__lt=now - SWEEP_GRACE,
        )
        .exclude(callback_url="")
        .filter(~Exists(sent))
        .order_by("completed_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    made = 0
    for task_id in list(missing):
        if webhook_enqueue_for_task(task_id=task_id) is not None:
            made += 1
    if made:
        logger.info("webhook sweep: created %d missing webhook(s)", made)
    return made
