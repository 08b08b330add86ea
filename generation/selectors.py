"""Reads on generation tasks. Every read is scoped to its owner (staff see all)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from config.prepared import Prepared

from .outlook import Outlook, outlook
from .models import TERMINAL_STATUSES, GeneratedImage, GenerationTask, TaskPreview, TaskStatus, preview_version


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


# What the status answer (generation.representation.task_status_answer) reads of a task:
# the columns of TaskDetailSerializer's fields, the template's slug and the live frame's
# write time (a LEFT JOIN on the preview row, never its picture).
STATUS_TASK_COLUMNS = (
    "id", "user_id", "prompt", "model_name", "status", "error_message", "error_params", "created_at",
    "completed_at", "negative_prompt", "width", "height", "steps", "cfg", "sampler", "scheduler", "seed",
    "batch_size", "status_message", "status_params", "progress_value", "progress_max", "progress_node",
    "error_code", "error_fields", "started_at", "template__slug", "source_image_id", "denoise", "callback_url",
    "retries", "inputs", "preview__updated_at", "backend_id",
)
STATUS_RUN_COLUMNS = ("number", "backend_name", "submitted_at", "started_at", "ended_at", "outcome", "ended_by",
                      "error_message", "error_params")
STATUS_IMAGE_COLUMNS = ("id", "index", "content_type", "width", "height", "seed", "size_bytes")

# The task's row once per run and image (LEFT JOINs: a row with empty run or image columns
# when it has none). A task holds a few of each (a batch of at most EASEL_MAX_BATCH_SIZE
# images, a run per attempt), so the rows stay few, and the call is one round trip to the
# database: on PostgreSQL each costs more than the rest of the call.
_JOINED = (*(f"runs__{column}" for column in STATUS_RUN_COLUMNS),
           *(f"images__{column}" for column in STATUS_IMAGE_COLUMNS))
_ORDER = ("runs__number", "images__index")

# Compiled once per connection (config.prepared): building these statements cost several
# times what running them does, on the call every client polls.
_STATUS_OWN = Prepared(lambda pk, user_id: GenerationTask.objects.filter(pk=pk, user_id=user_id)
                       .order_by(*_ORDER).values_list(*STATUS_TASK_COLUMNS, *_JOINED), arguments=2)
_STATUS_ANY = Prepared(lambda pk: GenerationTask.objects.filter(pk=pk)
                       .order_by(*_ORDER).values_list(*STATUS_TASK_COLUMNS, *_JOINED), arguments=1)


@dataclass(frozen=True)
class TaskStatusRead:
    """Everything the status answer says, as read: the task's columns (STATUS_TASK_COLUMNS,
    by name), its runs oldest first and, once completed, its images by index (tuples of
    STATUS_RUN_COLUMNS and STATUS_IMAGE_COLUMNS). Its ETag and its body are both made from
    this, so the one cannot change without the other."""

    task: dict
    runs: tuple
    images: tuple
    outlook: Outlook | None  # None once finished


def generation_status_read(*, user, task_id: int) -> TaskStatusRead:
    """The status poll's read, scoped like `generation_get` (404 for another user's task):
    the task with its template's slug, its frame's time, its runs and its images, in one
    statement."""
    rows = _STATUS_ANY.rows(task_id) if user.is_staff else _STATUS_OWN.rows(task_id, user.pk)
    if not rows:
        raise Http404
    split = len(STATUS_TASK_COLUMNS)
    at_images = split + len(STATUS_RUN_COLUMNS)
    task = dict(zip(STATUS_TASK_COLUMNS, rows[0][:split]))
    # Each run comes once per image, each image once per run (ordered by run, then index):
    # first sightings, in order. `number` and `id` are never empty in a real row.
    runs: dict = {}
    images: dict = {}
    for row in rows:
        if row[split] is not None:
            runs.setdefault(row[split], row[split:at_images])
        if row[at_images] is not None:
            images.setdefault(row[at_images], row[at_images:])
    completed = task["status"] == TaskStatus.COMPLETED
    finished = task["status"] in TERMINAL_STATUSES
    place = None if finished else outlook(
        task_id=task["id"], user_id=task["user_id"], status=task["status"], backend_id=task["backend_id"],
        model_name=task["model_name"], started_at=task["started_at"])
    return TaskStatusRead(task=task, runs=tuple(runs.values()), images=tuple(images.values()) if completed else (),
                          outlook=place)


def generation_visible_id(*, user, task_id: int) -> int:
    """The task's id if the user may see it, else 404; reads nothing else (the preview's
    owner check)."""
    if not task_visible_to(user=user).filter(pk=task_id).exists():
        raise Http404
    return task_id


def preview_version_get(*, task_id: int) -> int | None:
    """The version of the task's live frame (TaskPreview.version), without its picture;
    None before the first frame."""
    updated_at = TaskPreview.objects.filter(task_id=task_id).values_list("updated_at", flat=True).first()
    return None if updated_at is None else preview_version(updated_at)


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
