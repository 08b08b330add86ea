"""A task, once waited for, as OpenAI's images answer: `{"created", "data": [...]}` with
a signed link or the picture's bytes per image, or OpenAI's error naming the task."""
from __future__ import annotations

import base64

from django.utils.translation import gettext as _

from ..models import GenerationTask, TaskStatus
from .errors import NO_RETRY, OpenAIError
from .links import image_link


def _unfinished(task: GenerationTask) -> OpenAIError:
    if task.status == TaskStatus.FAILED:
        message = _("The generation failed (Easel task #%(id)s): %(error)s") % {
            "id": task.pk, "error": task.error_text or _("no reason given")}
        return OpenAIError(message, status_code=500, type="server_error", code="generation_failed",
                           headers=NO_RETRY, task_id=task.pk)
    if task.status == TaskStatus.CANCELLED:
        return OpenAIError(_("The generation was cancelled (Easel task #%(id)s).") % {"id": task.pk},
                           status_code=500, type="server_error", code="generation_cancelled", headers=NO_RETRY,
                           task_id=task.pk)
    # Still queued or running: 504 (the studio did not finish in time), not to be sent
    # again by the SDK (a second task); the task goes on and ends up in the history.
    return OpenAIError(
        _("The images were not ready in time. Easel task #%(id)s goes on: find it in your history (GET "
          "/api/v1/generation/status/%(id)s).") % {"id": task.pk},
        status_code=504, type="server_error", code="timeout", headers=NO_RETRY, task_id=task.pk,
    )


def _picture_b64(image) -> str:
    try:
        with image.file.storage.open(image.file.name, "rb") as handle:
            return base64.b64encode(handle.read()).decode("ascii")
    except OSError as exc:
        raise OpenAIError(_("A stored picture of task #%(id)s is missing.") % {"id": image.task_id},
                          status_code=500, type="server_error", code="server_error", headers=NO_RETRY) from exc


def images_answer(request, task: GenerationTask, *, response_format: str) -> dict:
    """OpenAI's answer for a completed task; raises OpenAIError for any other."""
    if task.status != TaskStatus.COMPLETED:
        raise _unfinished(task)
    data = []
    for image in task.images.order_by("index"):
        if response_format == "b64_json":
            data.append({"b64_json": _picture_b64(image)})
        else:
            data.append({"url": image_link(request, image)})
    return {"created": int(task.created_at.timestamp()), "data": data}
