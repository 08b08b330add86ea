"""Streaming stored pictures to whoever may see them (pages and API share these).

Every picture goes out through here: results and thumbnails, source images, and the
live preview frame. `?download=` is read by `query_flag` on the pages (anything but a
yes is no); the API reads it strictly (config.api_input.query_bool), with the same yes.
"""
from __future__ import annotations

from django.core.cache import caches
from django.http import FileResponse, Http404, HttpResponse
from django.utils.http import content_disposition_header

from config.api_input import YES as TRUE_VALUES
from config.conditional import etag_matches, not_modified

from ..media_types import extension_for
from ..models import GeneratedImage, SourceImage, TaskPreview, preview_version
from .metadata import strip_metadata


def query_flag(value: str | None) -> bool:
    """A yes/no query parameter: 1, true, yes or on (any case) mean yes; anything else no."""
    return (value or "").strip().lower() in TRUE_VALUES


def _stream(field, *, content_type: str, filename: str, download: bool) -> FileResponse:
    if not field or not field.name:
        raise Http404
    try:
        handle = field.storage.open(field.name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404 from exc
    response = FileResponse(handle, content_type=content_type, as_attachment=False, filename=filename)
    if download:
        response["Content-Disposition"] = content_disposition_header(True, filename)
    # Owner-only content: never cached by shared caches.
    response["Cache-Control"] = "private, max-age=3600"
    return response


def image_filename(image: GeneratedImage, *, thumbnail: bool = False) -> str:
    """The name a downloaded result gets ("easel-<task>-<index>.png"), in a zip too."""
    if thumbnail:
        return f"easel-{image.task_id}-{image.index}-thumb.webp"
    name = image.file.name or ""
    extension = name.rsplit(".", 1)[-1] if "." in name else "png"
    return f"easel-{image.task_id}-{image.index}.{extension}"


def image_response(image: GeneratedImage, *, thumbnail: bool, download: bool = False) -> FileResponse:
    """A result (or its WebP thumbnail), `inline` unless `download` asks to save it."""
    return _stream(image.thumbnail if thumbnail else image.file,
                   content_type="image/webp" if thumbnail else image.content_type,
                   filename=image_filename(image, thumbnail=thumbnail), download=download)


def public_image_response(image: GeneratedImage, *, thumbnail: bool, download: bool = False) -> HttpResponse:
    """A result for someone who is not its owner (a share link): the picture without the
    metadata its file carries (ComfyUI embeds the whole workflow in its PNGs)."""
    field = image.thumbnail if thumbnail else image.file
    if not field or not field.name:
        raise Http404
    try:
        with field.storage.open(field.name, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError) as exc:
        raise Http404 from exc
    data, content_type = strip_metadata(data, "image/webp" if thumbnail else image.content_type)
    response = HttpResponse(data, content_type=content_type)
    filename = image_filename(image, thumbnail=thumbnail)
    if content_type != image.content_type and not thumbnail:
        filename = f"{filename.rsplit('.', 1)[0]}.{extension_for(content_type)}"
    response["Content-Disposition"] = content_disposition_header(download, filename)
    return response


def source_response(source: SourceImage) -> FileResponse:
    """A source image, as Easel stored it (re-encoded)."""
    return _stream(source.file, content_type=source.content_type,
                   filename=f"easel-upload-{source.pk}.{source.extension}", download=False)


# A versioned frame (`?v=`) never changes: the browser may keep it, briefly (a running
# task makes a new one every half second; the page only ever asks for the newest).
VERSIONED_PREVIEW_CACHE_CONTROL = "private, max-age=60, immutable"
# The bare URL names whatever frame is newest: never kept.
PREVIEW_CACHE_CONTROL = "no-store"
# How long a frame stays in the `previews` cache (settings.CACHES).
PREVIEW_CACHE_SECONDS = 60


def _preview_key(task_id: int, version: int) -> str:
    return f"easel:preview:{task_id}:{version}"


def _preview_etag(version: int) -> str:
    return f'W/"preview-{version}"'


def _preview_answer(data: bytes, content_type: str, version: int, *, immutable: bool) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Cache-Control"] = VERSIONED_PREVIEW_CACHE_CONTROL if immutable else PREVIEW_CACHE_CONTROL
    response["ETag"] = _preview_etag(version)
    return response


def _no_frame(status: int) -> HttpResponse:
    if status == 404:
        raise Http404
    response = HttpResponse(status=status)
    response["Cache-Control"] = "no-store"
    return response


def preview_response(request, task_id: int, *, version: int | None, missing: int = 404) -> HttpResponse:
    """A running task's latest live frame (`version` None), or the frame of that version.

    The caller has checked that the user may see the task. Frames are kept in the
    `previews` cache under (task, version), so the page (and an app) fetching a frame,
    or several tabs fetching the same one, read its picture from the database once: a
    versioned request that the cache holds reads nothing, a bare one reads only the
    frame's time. A versioned URL whose frame has been replaced since (another process's
    cache did not hold it) gets the newest frame, not kept by the browser (its URL names
    another one). 304 when `If-None-Match` names the frame that would be sent.

    No frame (none yet, or the task ended): `missing`, 404 for the API (its documented
    answer), 204 for the pages, whose script asks for a frame the task may have just
    dropped and would otherwise make the browser log a failed load.
    """
    previews = caches["previews"]
    if version is not None:
        if etag_matches(request, _preview_etag(version)):
            return not_modified(_preview_etag(version), cache_control=VERSIONED_PREVIEW_CACHE_CONTROL)
        kept = previews.get(_preview_key(task_id, version))
        if kept is not None:
            return _preview_answer(kept[1], kept[0], version, immutable=True)
    else:
        updated_at = TaskPreview.objects.filter(task_id=task_id).values_list("updated_at", flat=True).first()
        if updated_at is None:
            return _no_frame(missing)
        current = preview_version(updated_at)
        if etag_matches(request, _preview_etag(current)):
            return not_modified(_preview_etag(current), cache_control=PREVIEW_CACHE_CONTROL)
        kept = previews.get(_preview_key(task_id, current))
        if kept is not None:
            return _preview_answer(kept[1], kept[0], current, immutable=False)
    row = TaskPreview.objects.filter(task_id=task_id).values_list("image", "content_type", "updated_at").first()
    if row is None:
        return _no_frame(missing)
    data, content_type, current = bytes(row[0]), row[1], preview_version(row[2])
    previews.set(_preview_key(task_id, current), (content_type, data), PREVIEW_CACHE_SECONDS)
    return _preview_answer(data, content_type, current, immutable=version == current)
