"""Streaming stored images to their owner (pages and API share these)."""
from __future__ import annotations

from django.http import FileResponse, Http404, HttpResponse

from .models import GeneratedImage, GenerationTask, TaskPreview


def image_response(image: GeneratedImage, *, thumbnail: bool) -> FileResponse:
    field = image.thumbnail if thumbnail else image.file
    if not field or not field.name:
        raise Http404
    try:
        handle = field.storage.open(field.name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise Http404 from exc
    extension = "webp" if thumbnail else field.name.rsplit(".", 1)[-1]
    filename = f"easel-{image.task_id}-{image.index}{'-thumb' if thumbnail else ''}.{extension}"
    response = FileResponse(
        handle,
        content_type="image/webp" if thumbnail else image.content_type,
        as_attachment=False,
        filename=filename,
    )
    # Owner-only content: never cached by shared caches.
    response["Cache-Control"] = "private, max-age=3600"
    return response


def preview_response(task: GenerationTask) -> HttpResponse:
    preview = TaskPreview.objects.filter(task=task).first()
    if preview is None:
        raise Http404
    response = HttpResponse(bytes(preview.image), content_type=preview.content_type)
    response["Cache-Control"] = "no-store"
    return response
