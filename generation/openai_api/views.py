"""The OpenAI-compatible endpoints: images (generations, edits) and models.

Each create waits for its task like OpenAI's calls wait for their images, within the
studio's create wait (EASEL_CREATE_WAIT_SECONDS and its slots, `generation.api.waits`).
"""
from __future__ import annotations

from rest_framework.parsers import FormParser
from rest_framework.response import Response

from accounts.models import ApiToken
from config.parsers import MultiPartParser
from models_catalog.selectors import (
    checkpoint_get_usable,
    checkpoint_list_usable,
    template_get_enabled,
    template_list_enabled,
)

from ..api.idempotency import replayed_headers
from ..api.waits import task_wait
from ..idempotency import idempotency_key_clean, with_idempotency
from .answers import images_answer
from .create import openai_task_create, request_fingerprint
from .errors import model_not_found
from .mapping import OPENAI_MODEL_PREFIXES, edit_request, generation_request
from .views_base import OpenAIView


def _answer(request, parsed, *, operation: str) -> Response:
    """Create (once per Idempotency-Key, as the REST creates: a retry with the key answers
    the first request's task), wait for it, answer its images."""
    token = request.auth if isinstance(request.auth, ApiToken) else None
    key = idempotency_key_clean(request.headers.get("Idempotency-Key"))
    task, replayed = with_idempotency(
        user=request.user, key=key, fingerprint=request_fingerprint(operation, request),
        create_fn=lambda: openai_task_create(user=request.user, api_token=token, request=parsed))
    task = task_wait(task, user_id=request.user.pk)
    return Response(images_answer(request, task, response_format=parsed.response_format),
                    headers=replayed_headers(replayed))


class ImageGenerationsView(OpenAIView):
    def post(self, request):
        return _answer(request, generation_request(request.data), operation="openai.images.generations")


class ImageEditsView(OpenAIView):
    parser_classes = [MultiPartParser, FormParser]

    def post(self, request):
        parsed = edit_request(request.data, request.FILES)
        try:
            return _answer(request, parsed, operation="openai.images.edits")
        finally:
            for picture in (parsed.image, parsed.mask):
                if picture is not None:
                    picture.close()


def _model(model_id: str, created) -> dict:
    return {"id": model_id, "object": "model", "created": int(created.timestamp()) if created else 0,
            "owned_by": "easel"}


class ModelListView(OpenAIView):
    """The usable checkpoints, then the enabled templates (each a valid `model`)."""

    def get(self, request):
        data = [_model(c.name, c.created_at) for c in checkpoint_list_usable()]
        data += [_model(t.slug, t.created_at) for t in template_list_enabled()]
        return Response({"object": "list", "data": data})


class ModelDetailView(OpenAIView):
    def get(self, request, model_id: str):
        checkpoint = checkpoint_get_usable(name=model_id)
        if checkpoint is not None:
            return Response(_model(checkpoint.name, checkpoint.created_at))
        template = template_get_enabled(slug=model_id)
        if template is not None:
            return Response(_model(template.slug, template.created_at))
        if model_id.lower().startswith(OPENAI_MODEL_PREFIXES):
            return Response(_model(model_id, None))
        raise model_not_found(model_id)
