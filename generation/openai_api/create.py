"""The one way an OpenAI images request becomes an Easel task.

`openai_task_create` takes the parsed request and returns the task, so a wrapper
(an `Idempotency-Key` replaying the first answer) can sit around it without knowing
anything of OpenAI's request shape.
"""
from __future__ import annotations

import hashlib
import logging

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ..gallery.uploads import source_image_store
from ..idempotency import body_fingerprint
from ..models import GenerationTask
from ..services import generation_create
from .errors import OpenAIError
from .mapping import ImageRequest

logger = logging.getLogger(__name__)

# Easel's request fields → the OpenAI parameter a client sent them as.
_PARAMS = {
    "prompt": "prompt", "model_name": "model", "template": "model", "width": "size", "height": "size",
    "batch_size": "n", "source_image": "image",
}


def _refusal(exc: ValidationError, request: ImageRequest) -> OpenAIError:
    fields = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
    name, messages = next(iter(fields.items()))
    param = "mask" if name == request.mask_input else _PARAMS.get(name)
    if name == "source_image" and request.image is None:
        param = "model"  # a generation naming an image-to-image template
    return OpenAIError(messages[0] if messages else _("Invalid input."), param=param, code="invalid_value")


def openai_task_create(*, user, api_token, request: ImageRequest) -> GenerationTask:
    """Store the request's pictures (edits) and create the task through the service: the
    user's quota, limits and the fair queue apply as to any other create."""
    extra: dict = {}
    if request.image is not None:
        extra["source_image"] = source_image_store(user=user, image=request.image, name="openai-image.png").pk
    if request.mask is not None:
        mask = source_image_store(user=user, image=request.mask, name="openai-mask.png")
        extra["inputs"] = {request.mask_input: mask.pk}
    try:
        task = generation_create(
            user=user, api_token=api_token, prompt=request.prompt, model_name=request.model_name,
            template=request.template.slug if request.template is not None else None,
            width=request.width, height=request.height, batch_size=request.batch_size, strict=True, **extra,
        )
    except ValidationError as exc:
        raise _refusal(exc, request) from exc
    if request.user:
        # OpenAI's `user` names the client's own end user (for abuse reports); Easel's
        # owner of the task is the token's user, so it is only written to the log.
        logger.info("OpenAI API task %s created for end user %r", task.pk, request.user[:200])
    return task


def request_fingerprint(operation: str, request) -> str:
    """What makes two requests the same one for an Idempotency-Key: the form or JSON
    fields, and each uploaded picture by its content (an edit's image and mask)."""
    fields = {k: v for k, v in request.data.items() if k not in request.FILES}
    for name, upload in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in upload.chunks():
            digest.update(chunk)
        upload.seek(0)
        fields[name] = "sha256:" + digest.hexdigest()
    return body_fingerprint(operation, fields)
