"""Streaming stored pictures to whoever may see them (pages and API share these).

Every picture goes out through here: results and thumbnails, source images, and the
live preview frame. `?download=` is read by `query_flag` on the pages (anything but a
yes is no); the API reads it strictly (config.api_input.query_bool), with the same yes.
"""
from __future__ import annotations

from django.http import FileResponse, Http404, HttpResponse
from django.utils.http import content_disposition_header

from config.api_input import YES as TRUE_VALUES

from ..media_types import extension_for
from ..models import GeneratedImage, GenerationTask, SourceImage, TaskPreview
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


def preview_response(task: GenerationTask) -> HttpResponse:
    preview = TaskPreview.objects.filter(task=task).first()
    if preview is None:
        raise Http404
    response = HttpResponse(bytes(preview.image), content_type=preview.content_type)
    response["Cache-Control"] = "no-store"
    return response
