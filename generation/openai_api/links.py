"""Signed, expiring image links: what an OpenAI `url` answer carries.

OpenAI's clients fetch the picture with a plain GET, without the API key, so the link
itself is the permission: the image's id signed with the studio's secret key and the
time (`TimestampSigner`), honoured for EASEL_OPENAI_URL_MAX_AGE seconds. A deleted
task's pictures are gone with it, whatever the link.
"""
from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.translation import gettext as _
from rest_framework.permissions import AllowAny

from ..gallery.files import image_response
from ..models import GeneratedImage
from .errors import OpenAIError
from .views_base import OpenAIView

_SALT = "easel.openai.image-link"


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_SALT)


def image_link(request, image: GeneratedImage) -> str:
    token = _signer().sign(str(image.pk))
    return request.build_absolute_uri(reverse("openai-image-file", args=[token]))


def image_from_link(token: str) -> GeneratedImage:
    try:
        image_id = int(_signer().unsign(token, max_age=settings.EASEL_OPENAI_URL_MAX_AGE))
    except signing.SignatureExpired as exc:
        raise OpenAIError(_("This image link has expired."), status_code=403, code="link_expired") from exc
    except (signing.BadSignature, ValueError) as exc:
        raise OpenAIError(_("This image link is not valid."), status_code=403, code="invalid_link") from exc
    image = GeneratedImage.objects.filter(pk=image_id).first()
    if image is None:
        raise OpenAIError(_("Not found."), status_code=404, code="not_found")
    return image


class OpenAIImageFileView(OpenAIView):
    """A picture through its signed link: no token, the signature is the permission."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request, token: str):
        return image_response(image_from_link(token), thumbnail=False)
