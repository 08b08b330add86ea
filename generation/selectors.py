"""Reads on generation tasks. Every read is scoped to its owner (staff see all)."""
from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from .models import GeneratedImage, GenerationTask


def task_visible_to(*, user) -> QuerySet[GenerationTask]:
    qs = GenerationTask.objects.all()
    return qs if user.is_staff else qs.filter(user=user)


def generation_get(*, user, task_id: int) -> GenerationTask:
    """The task if the user may see it; 404 otherwise (never 403: ids are not secrets we confirm)."""
    return get_object_or_404(task_visible_to(user=user).select_related("backend"), pk=task_id)


def _as_answered(qs: QuerySet[GenerationTask]) -> QuerySet[GenerationTask]:
    """What an answer reads of a task, in the task's own query: its template's name and
    slug (not the template's graph), and not the prompt it sent to ComfyUI (that whole
    graph is the admin's to show): JSON decoded on every poll for nothing otherwise."""
    return qs.select_related("template").defer("rendered_prompt", "template__graph", "template__description")


def generation_get_answered(*, user, task_id: int) -> GenerationTask:
    """`generation_get` for the status poll (what app clients call every 2 s): the task
    with its template, without the backend it ran on (the answer never names it)."""
    return get_object_or_404(_as_answered(task_visible_to(user=user)), pk=task_id)


def generation_list(
    *,
    user,
    status: str | None = None,
    model_name: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    search: str | None = None,
) -> QuerySet[GenerationTask]:
    """The user's own tasks, newest first, with their images (staff included: history is personal).

    `created_after` is inclusive, `created_before` exclusive; `search` matches the
    prompt text, ignoring case.
    """
    qs = GenerationTask.objects.filter(user=user)
    if status:
        qs = qs.filter(status=status)
    if model_name:
        qs = qs.filter(model_name=model_name)
    if created_after is not None:
        qs = qs.filter(created_at__gte=created_after)
    if created_before is not None:
        qs = qs.filter(created_at__lt=created_before)
    if search:
        qs = qs.filter(prompt__icontains=search)
    # (-created_at, -id) is total and matches the task_user_recent index.
    return _as_answered(
        qs.order_by("-created_at", "-id")
        .prefetch_related(Prefetch("images", queryset=GeneratedImage.objects.order_by("index")))
    )


def image_get(*, user, image_id: int) -> GeneratedImage:
    qs = GeneratedImage.objects.select_related("task")
    if not user.is_staff:
        qs = qs.filter(task__user=user)
    return get_object_or_404(qs, pk=image_id)
