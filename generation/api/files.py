"""Pictures over the API: a result, its thumbnail, a running task's live preview."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from config.api_input import int_parameter, query_bool, query_int

from ..gallery.files import image_response, preview_response
from ..models import GeneratedImage
from ..selectors import generation_visible_id, image_get
from .schema import ETAG, IF_NONE_MATCH, IMAGE_ID, NOT_MODIFIED, TASK_ID, binary_answers


class FirstRendererNegotiation(BaseContentNegotiation):
    """File views answer with the file whatever `Accept` says; errors are JSON.

    DRF's default negotiation would refuse `Accept: image/*` with 406 because the view's
    only renderer is JSON, although the successful answer is not rendered at all.
    """

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


DOWNLOAD = OpenApiParameter(
    "download", OpenApiTypes.BOOL,
    description="`1`/`true`/`yes`/`on`: `Content-Disposition: attachment` (save as); `0`/`false`/`no`/`off` "
                "or absent: `inline`; anything else: 400.",
)


def _file_answer(request, image: GeneratedImage, *, thumbnail: bool):
    return image_response(image, thumbnail=thumbnail, download=query_bool(request.query_params, "download"))


class GenerationImageFileApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_image_file",
        summary="Download an image",
        description="Streamed, with the image's content type; owner only.",
        parameters=[IMAGE_ID, DOWNLOAD],
        responses=binary_answers("image/png", "image/jpeg", "image/webp", description="The image."),
        tags=["generation"],
    )
    def get(self, request, image_id: int):
        return _file_answer(request, image_get(user=request.user, image_id=image_id), thumbnail=False)


class GenerationImageThumbnailApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_image_thumbnail",
        summary="Download an image's thumbnail",
        description="A WebP, at most `EASEL_THUMBNAIL_SIZE` pixels on its longest edge; owner only.",
        parameters=[IMAGE_ID, DOWNLOAD],
        responses=binary_answers("image/webp", description="The thumbnail."),
        tags=["generation"],
    )
    def get(self, request, image_id: int):
        return _file_answer(request, image_get(user=request.user, image_id=image_id), thumbnail=True)


PREVIEW_VERSION = int_parameter(
    "v", description="The frame's version, as `preview_url` in the task's answer gives it once a frame is stored: "
                     "that frame, which the client may keep (`Cache-Control: private, max-age=60, immutable`). "
                     "Absent: the newest frame, never kept (`no-store`).",
)


class GenerationPreviewApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="generation_preview",
        summary="The latest live preview frame of a running task",
        description="404 until the backend has sent a frame, and after the task ended (a versioned URL may still "
                    "answer its frame for a minute). Every frame carries a weak `ETag`; 304 with no body when "
                    "`If-None-Match` names the frame that would be sent.",
        parameters=[TASK_ID, PREVIEW_VERSION, IF_NONE_MATCH, ETAG],
        responses={**binary_answers("image/jpeg", "image/png", description="The frame."), 304: NOT_MODIFIED},
        tags=["generation"],
    )
    def get(self, request, task_id: int):
        version = query_int(request.query_params, "v")
        return preview_response(request, generation_visible_id(user=request.user, task_id=task_id), version=version)
