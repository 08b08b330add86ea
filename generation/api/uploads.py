"""Source images over the API: upload, list, read, fetch the picture, delete, reuse a result."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import ApiError
from config.api_input import PageNumberPagination, page_error_responses, page_parameters
from config.parsers import MultiPartParser

from ..gallery.files import source_response
from ..gallery.selectors import result_image_get_own, source_image_get, source_image_list
from ..gallery.uploads import (
    CODE_TOO_LARGE,
    CODE_UNSUPPORTED,
    source_image_create,
    source_image_delete,
    source_image_from_result,
)
from ..models import SourceImage


class UploadTooLarge(ApiError):
    """413: the upload is over EASEL_MAX_UPLOAD_BYTES."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = CODE_TOO_LARGE

    def __init__(self, message: str, fields: dict):
        super().__init__(code=CODE_TOO_LARGE, message=message, status_code=self.status_code, fields=fields)


class UnsupportedImage(ApiError):
    """415: not a picture, or not one of PNG, JPEG, WebP."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = CODE_UNSUPPORTED

    def __init__(self, message: str, fields: dict):
        super().__init__(code=CODE_UNSUPPORTED, message=message, status_code=self.status_code, fields=fields)


_STATUS_ERRORS = {CODE_TOO_LARGE: UploadTooLarge, CODE_UNSUPPORTED: UnsupportedImage}


def upload_api_error(exc: DjangoValidationError) -> Exception:
    """The service's ValidationError, as 413/415 when its code says so (else unchanged: 400)."""
    for error in getattr(exc, "error_dict", {}).get("image", []):
        if error.code in _STATUS_ERRORS:
            fields = {"image": [str(m) for m in error.messages]}
            return _STATUS_ERRORS[error.code](fields["image"][0], fields)
    return exc


class SourceImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = SourceImage
        fields = ["id", "url", "original_name", "width", "height", "content_type", "size_bytes", "created_at"]

    def get_url(self, source: SourceImage) -> str:
        path = reverse("api-upload-file", args=[source.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class UploadPagination(PageNumberPagination):
    """20 uploads a page, `page_size` up to 100."""


class SourceImagePageSerializer(serializers.Serializer):
    """The list's page, as PageNumberPagination answers it (for the API description)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = SourceImageSerializer(many=True)


class UploadListCreateApi(APIView):
    """GET: the caller's source images, newest first. POST (multipart `image`): upload one.

    POST answers 201 with the stored picture, also when the same picture was uploaded
    before: the answer then names the existing upload instead of storing a copy.
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        image = serializers.FileField()

    @extend_schema(operation_id="uploads_list", parameters=page_parameters(UploadPagination),
                   responses={200: SourceImagePageSerializer, **page_error_responses()})
    def get(self, request):
        paginator = UploadPagination()
        page = paginator.paginate_queryset(source_image_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(
            SourceImageSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: SourceImageSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["image"]
        try:
            source = source_image_create(user=request.user, file=upload, name=upload.name or "")
        except DjangoValidationError as exc:
            raise upload_api_error(exc) from exc
        return Response(SourceImageSerializer(source, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class UploadDetailApi(APIView):
    @extend_schema(operation_id="uploads_get", responses={200: SourceImageSerializer})
    def get(self, request, source_id: int):
        source = source_image_get(user=request.user, source_id=source_id)
        return Response(SourceImageSerializer(source, context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request, source_id: int):
        source_image_delete(source=source_image_get(user=request.user, source_id=source_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class UploadFileApi(APIView):
    """The stored (re-encoded) picture itself, streamed from storage."""

    @extend_schema(responses={(200, "image/*"): OpenApiResponse(OpenApiTypes.BINARY)})
    def get(self, request, source_id: int):
        return source_response(source_image_get(user=request.user, source_id=source_id))


class UploadFromResultApi(APIView):
    """Make one of the caller's finished results a source image (201, deduplicated like uploads)."""

    @extend_schema(request=None, responses={201: SourceImageSerializer})
    def post(self, request, image_id: int):
        image = result_image_get_own(user=request.user, image_id=image_id)
        source = source_image_from_result(user=request.user, image=image)
        return Response(SourceImageSerializer(source, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)
