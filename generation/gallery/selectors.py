"""Reads on source images. Uploads are personal: scoped to their owner, staff included."""
from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from ..models import GeneratedImage, SourceImage


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
