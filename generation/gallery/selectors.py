"""Reads on source images. Uploads are personal: scoped to their owner, staff included."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _

from models_catalog.selectors import checkpoint_find_usable

from ..models import GeneratedImage, SourceImage
from . import png_params
from .uploads import CODE_UNSUPPORTED, upload_read


def source_image_list(*, user) -> QuerySet[SourceImage]:
    """The user's source images, newest first."""
    return SourceImage.objects.filter(user=user).order_by("-created_at", "-id")


def source_image_get(*, user, source_id: int) -> SourceImage:
    """The user's own source image; 404 for anyone else's (we never confirm an id exists)."""
    return get_object_or_404(SourceImage, user=user, pk=source_id)


def result_image_get_own(*, user, image_id: int) -> GeneratedImage:
    """One of the user's own results, to start img2img from.

    Stricter than `generation.selectors.image_get`, which lets staff see everyone's images: a
    source image becomes the caller's, so it may only come from the caller's results.
    """
    return get_object_or_404(GeneratedImage.objects.select_related("task"), task__user=user, pk=image_id)


def _png_params_messages() -> dict[str, tuple[str, str]]:
    """Each PngParamsError code: the ValidationError code the API keys its status on,
    and the message in the request's language."""
    return {
        png_params.NOT_PNG: (CODE_UNSUPPORTED, _(
            "This is not a PNG picture: only PNG files carry the settings they were made with.")),
        png_params.DAMAGED: (png_params.DAMAGED, _("The picture is damaged or incomplete and cannot be read.")),
        png_params.NO_PARAMETERS: (png_params.NO_PARAMETERS, _(
            "This picture does not say how it was made: it carries no settings Easel can read.")),
    }


def png_parameters_get(*, file) -> dict:
    """The generation parameters an uploaded PNG carries (gallery.png_params), with
    `model_name` set to the catalog's name of its checkpoint when the catalog has a
    usable one (else None; `checkpoint` keeps the file's own name).

    Reads at most the upload limit; nothing is stored. Raises ValidationError on the
    "image" field (code CODE_TOO_LARGE, CODE_UNSUPPORTED, "damaged", "no_parameters").
    """
    try:
        params = png_params.png_params_read(upload_read(file))
    except png_params.PngParamsError as exc:
        code, message = _png_params_messages()[exc.code]
        raise ValidationError({"image": [ValidationError(message, code=code)]}) from exc
    checkpoint = checkpoint_find_usable(names=[params["model_name"] or "", params["checkpoint"] or ""])
    params["model_name"] = checkpoint.name if checkpoint else None
    return params
