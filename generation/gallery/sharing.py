"""Public read-only links to one task's images and prompt.

A share token is the only key: anyone holding the link sees the pictures and the
prompt, nothing else of the owner's (no name, no other parameters). Revoking clears
the token, so the old link answers 404 at once; sharing again makes a new one.
"""
from __future__ import annotations

import secrets

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from ..errors import TaskStateError
from ..models import GeneratedImage, GenerationTask, TaskStatus


def task_share(*, task: GenerationTask) -> str:
    """Make (or return the existing) public link token of a finished task.

    Idempotent: sharing twice, even from two requests at once, gives one token
    (the conditional UPDATE lets only the first writer set it).
    """
    if task.status != TaskStatus.COMPLETED:
        raise TaskStateError(_("Only a finished task with images can be shared."))
    if task.share_token:
        return task.share_token
    # 24 random bytes, URL-safe: unguessable, and not derived from the id or the owner.
    token = secrets.token_urlsafe(24)
    GenerationTask.objects.filter(pk=task.pk, share_token__isnull=True).update(
        share_token=token, shared_at=timezone.now()
    )
    task.refresh_from_db(fields=["share_token", "shared_at"])
    return task.share_token


def task_unshare(*, task: GenerationTask) -> None:
    """Revoke the task's public link; the old URL stops working immediately."""
    GenerationTask.objects.filter(pk=task.pk).update(share_token=None, shared_at=None)
    task.share_token, task.shared_at = None, None


def shared_task_get(*, token: str) -> GenerationTask:
    """The completed task behind a share token; 404 for anything else (revoked, unknown)."""
    if not token:
        raise Http404
    task = GenerationTask.objects.filter(share_token=token, status=TaskStatus.COMPLETED).first()
    if task is None:
        raise Http404
    return task


def shared_images(*, task: GenerationTask) -> QuerySet[GeneratedImage]:
    return task.images.order_by("index")


def shared_image_get(*, token: str, image_id: int) -> GeneratedImage:
    """One image of a shared task; 404 unless it belongs to the task the token opens."""
    task = shared_task_get(token=token)
    image = shared_images(task=task).filter(pk=image_id).first()
    if image is None:
        raise Http404
    return image
