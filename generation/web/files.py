"""The owner's pictures on the pages: results, thumbnails and source images (owner-checked)."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required

from ..gallery.files import image_response, query_flag, source_response
from ..gallery.selectors import source_image_get
from ..selectors import image_get


def _image(request, image_id: int, *, thumbnail: bool):
    image = image_get(user=request.user, image_id=image_id)
    return image_response(image, thumbnail=thumbnail, download=query_flag(request.GET.get("download")))


@login_required
def image_file(request, image_id: int):
    return _image(request, image_id, thumbnail=False)


@login_required
def image_thumbnail(request, image_id: int):
    return _image(request, image_id, thumbnail=True)


@login_required
def source_file(request, source_id: int):
    """A source image for its owner (the generate page's picker shows them)."""
    return source_response(source_image_get(user=request.user, source_id=source_id))
