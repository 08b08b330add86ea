"""Retention: keep stored images within the operator's limits, and storage free of strays.

`retention_run()` runs hourly (the "easel-retention" django-q2 schedule) and on demand
(`manage.py retention`). Three rules, each off unless configured:

- `EASEL_MAX_HISTORY_DAYS`: a finished task's images are removed this many days after
  it finished.
- `EASEL_MAX_STORAGE_GB`: while the images' total `size_bytes` is above the limit, the
  images of the oldest finished tasks are removed first.
- the orphan sweep (always on): files under `results/`, `thumbs/` and `uploads/` that no
  row points to (left by a crash between storing a file and saving its row, or by a
  failed delete) are removed once they are older than `ORPHAN_GRACE`.

What "removed" means: the task row stays, with `files_removed_at` set, so history, the
daily quota and the audit trail still read right; its GeneratedImage rows and their
files (image and thumbnail) go. Deleting the whole row would silently shrink a user's
history; keeping the images' rows would leave links that 404.

Never touched: a pending or processing task (its files are being written), and a shared
task (`share_token` set) until its share is revoked. A shared task's bytes still count
towards the storage limit, so the limit can stay exceeded while shares hold it up (the
log line says so). Works on any Django storage (local files, S3).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Exists, OuterRef, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import TERMINAL_STATUSES, GeneratedImage, GenerationTask, SourceImage

logger = logging.getLogger(__name__)

GB = 1000**3
SWEPT_FOLDERS = ("results", "thumbs", "uploads")
# A file is stored a moment before the row that points to it is saved: younger files
# are never swept, so a task finishing during the sweep keeps its images.
ORPHAN_GRACE = timedelta(hours=1)


def retention_run(*, now: datetime | None = None) -> dict:
    """Apply the retention rules once; answer (and log, on one line) what was removed."""
    now = now or timezone.now()
    summary = {
        "expired_tasks": 0,
        "storage_tasks": 0,
        "images_removed": 0,
        "bytes_removed": 0,
        "orphans_removed": 0,
        "stored_bytes": 0,
        "over_limit": False,
    }
    days = getattr(settings, "EASEL_MAX_HISTORY_DAYS", 0)
    if days and days > 0:
        cutoff = now - timedelta(days=days)
        for task_id in list(_removable().filter(finished_at__lt=cutoff).values_list("pk", flat=True)):
            removed = task_files_remove(task_id=task_id, now=now)
            if removed:
                summary["expired_tasks"] += 1
                summary["images_removed"] += removed[0]
                summary["bytes_removed"] += removed[1]

    limit_gb = getattr(settings, "EASEL_MAX_STORAGE_GB", 0)
    total = _stored_bytes()
    if limit_gb and limit_gb > 0:
        limit = int(limit_gb * GB)
        if total > limit:
            for task_id in list(_removable().values_list("pk", flat=True)):
                removed = task_files_remove(task_id=task_id, now=now)
                if removed:
                    summary["storage_tasks"] += 1
                    summary["images_removed"] += removed[0]
                    summary["bytes_removed"] += removed[1]
                    total -= removed[1]
                if total <= limit:
                    break
            total = _stored_bytes()
            summary["over_limit"] = total > limit
    summary["stored_bytes"] = total

    summary["orphans_removed"] = orphans_sweep(now=now)
    logger.info(
        "retention: removed the files of %d expired and %d over-limit task(s), %d image(s), %d bytes; "
        "%d orphan file(s); %d bytes stored%s",
        summary["expired_tasks"], summary["storage_tasks"], summary["images_removed"], summary["bytes_removed"],
        summary["orphans_removed"], summary["stored_bytes"],
        " (still over the limit: shared or running tasks hold the rest)" if summary["over_limit"] else "",
        extra={"retention": summary},
    )
    return summary


def _removable():
    """Finished, unshared tasks that still have images, oldest finished first."""
    has_images = Exists(GeneratedImage.objects.filter(task=OuterRef("pk")))
    return (
        GenerationTask.objects.filter(
            status__in=TERMINAL_STATUSES, share_token__isnull=True, files_removed_at__isnull=True
        )
        .filter(has_images)
        .annotate(finished_at=Coalesce("completed_at", "created_at"))
        .order_by("finished_at", "id")
    )


def _stored_bytes() -> int:
    return GeneratedImage.objects.aggregate(total=Sum("size_bytes"))["total"] or 0


def task_files_remove(*, task_id: int, now: datetime | None = None) -> tuple[int, int] | None:
    """Remove one finished task's images (rows and files), keeping the task row.

    Answers (images, bytes) removed, or None when the task may not be touched (any
    more): it is running again, was shared meanwhile, or is gone.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Re-checked under the row lock: the owner may have shared or retried it since
        # the candidates were listed.
        task = (
            GenerationTask.objects.select_for_update()
            .filter(pk=task_id, status__in=TERMINAL_STATUSES, share_token__isnull=True)
            .first()
        )
        if task is None:
            return None
        images = list(GeneratedImage.objects.filter(task_id=task_id))
        if not images:
            return None
        GeneratedImage.objects.filter(pk__in=[image.pk for image in images]).delete()
        GenerationTask.objects.filter(pk=task_id).update(files_removed_at=now)
        # Files go only once the rows are gone for good: a rolled-back transaction
        # must not leave rows pointing at deleted files.
        names = [field.name for image in images for field in (image.file, image.thumbnail) if field and field.name]
        transaction.on_commit(lambda: _delete_names(names))
    return len(images), sum(image.size_bytes for image in images)


def _delete_names(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # storage errors vary by backend; the orphan sweep retries later
            logger.warning("retention: could not delete %s", name, exc_info=True)


def _walk(folder: str):
    try:
        dirs, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{folder}/{name}"
    for name in dirs:
        yield from _walk(f"{folder}/{name}")


def _referenced() -> set[str]:
    names: set[str] = set()
    for file, thumbnail in GeneratedImage.objects.values_list("file", "thumbnail").iterator(chunk_size=2000):
        names.update(n for n in (file, thumbnail) if n)
    names.update(n for n in SourceImage.objects.values_list("file", flat=True).iterator(chunk_size=2000) if n)
    return names


def orphans_sweep(*, now: datetime | None = None) -> int:
    """Remove stored files under the media folders that no row points to; answer how many."""
    now = now or timezone.now()
    # Listed first, rows read after: a file stored during the listing either has its
    # row by then or is younger than the grace period.
    stored = [name for folder in SWEPT_FOLDERS for name in _walk(folder)]
    if not stored:
        return 0
    referenced = _referenced()
    removed = 0
    for name in stored:
        if name in referenced:
            continue
        try:
            modified = default_storage.get_modified_time(name)
        except (FileNotFoundError, OSError, NotImplementedError):
            continue
        except Exception:  # e.g. a botocore ClientError for an object deleted meanwhile
            logger.warning("retention: could not read the age of %s", name, exc_info=True)
            continue
        if timezone.is_naive(modified):
            modified = timezone.make_aware(modified, timezone.get_default_timezone())
        if now - modified < ORPHAN_GRACE:
            continue
        try:
            default_storage.delete(name)
            removed += 1
        except Exception:
            logger.warning("retention: could not delete orphan %s", name, exc_info=True)
    return removed
