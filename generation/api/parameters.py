"""Reading back how a picture was made: the parameters a PNG carries, for the form."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import ApiError
from config.parsers import MultiPartParser

from ..gallery.png_params import DAMAGED, NO_PARAMETERS
from ..gallery.selectors import png_parameters_get
from .uploads import upload_api_error


class ParametersFromPngApi(APIView):
    """POST (multipart `image`): the generation parameters embedded in a PNG.

    Read from Easel's own `easel` chunk, else ComfyUI's `prompt` graph, else an A1111
    `parameters` text (`source` says which). Nothing is stored. Fields the picture does
    not state are null. 400 `no_parameters` for a PNG that says nothing of how it was
    made, 400 `damaged` for a broken one, 415 for anything but a PNG, 413 past the
    upload limit.
    """

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        image = serializers.FileField()

    class OutputSerializer(serializers.Serializer):
        source = serializers.ChoiceField(choices=["easel", "comfyui", "a1111"],
                                         help_text="Where the parameters were found.")
        prompt = serializers.CharField(allow_null=True)
        negative_prompt = serializers.CharField(allow_null=True)
        model_name = serializers.CharField(
            allow_null=True, help_text="The catalog's model for the picture's checkpoint; null if it has none.")
        checkpoint = serializers.CharField(allow_null=True, help_text="The checkpoint as the picture names it.")
        template = serializers.CharField(allow_null=True, help_text="The workflow template's slug (Easel pictures).")
        width = serializers.IntegerField(allow_null=True)
        height = serializers.IntegerField(allow_null=True)
        seed = serializers.IntegerField(allow_null=True)
        steps = serializers.IntegerField(allow_null=True)
        cfg = serializers.FloatField(allow_null=True)
        sampler = serializers.CharField(allow_null=True)
        scheduler = serializers.CharField(allow_null=True)
        denoise = serializers.FloatField(allow_null=True)
        batch_size = serializers.IntegerField(allow_null=True)
        batch_index = serializers.IntegerField(allow_null=True, help_text="Which picture of its batch this is.")
        inputs = serializers.DictField(allow_null=True, help_text="The template's own inputs (Easel pictures).")

    @extend_schema(
        operation_id="generation_parameters_from_png",
        summary="Read the generation parameters embedded in a PNG",
        request={"multipart/form-data": InputSerializer},
        responses={200: OutputSerializer},
        tags=["generation"],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            params = png_parameters_get(file=data.validated_data["image"])
        except DjangoValidationError as exc:
            raise _with_code(exc) from exc
        return Response(self.OutputSerializer(params).data)


def _with_code(exc: DjangoValidationError) -> Exception:
    """413/415 as uploads answer them; `damaged` and `no_parameters` keep their own code
    (a 400, so clients can tell "nothing to read" from a bad request)."""
    for error in getattr(exc, "error_dict", {}).get("image", []):
        if error.code in (DAMAGED, NO_PARAMETERS):
            message = str(error.messages[0])
            return ApiError(code=error.code, message=message, fields={"image": [message]})
    return upload_api_error(exc)
