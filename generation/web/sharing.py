"""Public share links (no sign-in, the token is the key): a shared task's page and pictures."""
from __future__ import annotations

from django.shortcuts import render

from ..gallery.files import public_image_response, query_flag
from ..gallery.sharing import shared_image_get, shared_images, shared_task_get


def _no_index(response):
    # A shared link is public, not published: keep it out of search engines.
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def shared_task(request, token: str):
    task = shared_task_get(token=token)
    response = render(request, "generation/shared.html", {
        "token": token, "prompt": task.prompt, "images": list(shared_images(task=task)),
    })
    response["Cache-Control"] = "private, no-cache"
    return _no_index(response)


def _shared_image(request, token: str, image_id: int, *, thumbnail: bool):
    image = shared_image_get(token=token, image_id=image_id)
    # Strangers get the picture, not the workflow, seed and file names embedded in it.
    response = public_image_response(image, thumbnail=thumbnail, download=query_flag(request.GET.get("download")))
    # Revocation must bite at once: a browser re-asks every time.
    response["Cache-Control"] = "private, no-cache"
    return _no_index(response)


def shared_image(request, token: str, image_id: int):
    return _shared_image(request, token, image_id, thumbnail=False)


def shared_image_thumb(request, token: str, image_id: int):
    return _shared_image(request, token, image_id, thumbnail=True)
