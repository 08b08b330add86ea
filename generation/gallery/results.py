"""The pictures a task produced: stored with a thumbnail as they arrive from a backend,
removed with their files when the task is retried or deleted."""
from __future__ import annotations

import io
import logging
import uuid

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from PIL import Image

from config.prepared import Prepared, PreparedCreate

from ..media_types import content_type_for, extension_for
from ..models import GeneratedImage, GenerationTask
from .png_params import png_with_parameters, task_parameters

logger = logging.getLogger(__name__)


class UnreadableImage(ValueError):
    """The bytes a backend returned are not a picture Pillow can read."""


class StorageFailed(Exception):
    """Django's storage could not write a file (a full, read-only or unmounted disk, an
    S3 endpoint that is away or refusing). Usually passes: the caller retries."""


def _storage_errors() -> tuple[type[BaseException], ...]:
    # What the storage backends raise when they cannot write: OSError for local files,
    # botocore's and boto3's own errors for S3 (boto3 wraps a failed upload in
    # S3UploadFailedError, which is not a botocore error). Anything else is a bug, and
    # stays one.
    errors: list[type[BaseException]] = [OSError]
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # django-storages' S3 backend not installed
        pass
    else:
        errors += [Boto3Error, BotoCoreError, ClientError]
    return tuple(errors)


STORAGE_ERRORS = _storage_errors()


# Read for every picture stored (config.prepared: compiled once).
_INDEXES = Prepared(lambda task_id: GeneratedImage.objects.filter(task_id=task_id).values_list("index"), arguments=1)
# The image's INSERT, compiled once (config.prepared).
_IMAGE_CREATE = PreparedCreate(GeneratedImage)
_IDS = Prepared(lambda task_id: GeneratedImage.objects.filter(task_id=task_id).values_list("pk"), arguments=1)


def image_ids(*, task_id: int) -> set[int]:
    """The ids of the pictures stored for a task (by any of its attempts)."""
    return {pk for (pk,) in _IDS.rows(task_id)}


def result_store(*, task: GenerationTask, index: int, data: bytes) -> GeneratedImage:
    """Store one output picture of `task` (as the backend wrote it, plus Easel's own
    parameter chunks in a PNG: gallery.png_params) with a WebP thumbnail.

    `index` is the output's place; when an earlier attempt already stored that index,
    the next free one in steps of 100 is used (0, 100, 200… keep the output order).
    Raises UnreadableImage when the bytes are not a picture, StorageFailed when the
    storage could not write (nothing of this picture is left behind then).
    """
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            width, height, pillow_format = picture.width, picture.height, picture.format or "PNG"
            thumb = picture.convert("RGB")
            edge = settings.EASEL_THUMBNAIL_SIZE
            thumb.thumbnail((edge, edge))
            thumb_buffer = io.BytesIO()
            thumb.save(thumb_buffer, "WEBP", quality=80)
    except Exception as exc:  # Pillow raises many types for a bad file
        raise UnreadableImage(str(exc)) from exc
    content_type = content_type_for(pillow_format)
    if content_type == "image/png":
        # The downloaded file remembers how it was made (the share link strips it again,
        # gallery.metadata). After the decode above: only a readable picture is labelled.
        data = png_with_parameters(data, task_parameters(task=task, index=index, width=width, height=height))
    image = GeneratedImage(
        task=task, content_type=content_type, width=width, height=height, seed=task.seed + index,
        size_bytes=len(data),
    )
    taken = {index for (index,) in _INDEXES.rows(task.pk)}
    image.index = index
    while image.index in taken:
        image.index += 100
    extension = extension_for(content_type, default=pillow_format.lower())
    try:
        image.file.save(f"{uuid.uuid4().hex[:8]}.{extension}", ContentFile(data), save=False)
        image.thumbnail.save("thumb.webp", ContentFile(thumb_buffer.getvalue()), save=False)
    except STORAGE_ERRORS as exc:
        files_delete([image])  # the picture may have been written before its thumbnail failed
        raise StorageFailed(f"{type(exc).__name__}: {exc}") from exc
    try:
        _IMAGE_CREATE.create(image)
    except BaseException:
        files_delete([image])
        raise
    return image


def files_delete(images) -> None:
    """Remove the stored files (picture and thumbnail) of these image rows."""
    for image in images:
        for field in (image.file, image.thumbnail):
            if field and field.name:
                try:
                    field.storage.delete(field.name)
                except STORAGE_ERRORS:
                    logger.warning("could not delete %s", field.name, exc_info=True)


def results_delete(*, task: GenerationTask) -> None:
    """Remove a task's images, e.g. before it runs again: the rows now, their files once
    the transaction commits (a rolled-back delete must not leave rows without files)."""
    images = list(GeneratedImage.objects.filter(task=task))
    GeneratedImage.objects.filter(pk__in=[image.pk for image in images]).delete()
    transaction.on_commit(lambda: files_delete(images))
