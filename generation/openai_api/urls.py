"""The OpenAI-compatible API under /openai/v1/ (a client's `base_url`), and the signed
image links. Paths have no trailing slash, as OpenAI's clients call them; anything else
under /openai/ is a 404 in OpenAI's error shape, never a page."""
from django.urls import path, re_path

from . import errors, links, views

urlpatterns = [
    path("v1/images/generations", views.ImageGenerationsView.as_view(), name="openai-images-generations"),
    path("v1/images/edits", views.ImageEditsView.as_view(), name="openai-images-edits"),
    path("v1/models", views.ModelListView.as_view(), name="openai-models"),
    path("v1/models/<path:model_id>", views.ModelDetailView.as_view(), name="openai-model"),
    path("v1/files/images/<str:token>", links.OpenAIImageFileView.as_view(), name="openai-image-file"),
    re_path(r"", errors.not_found),
]
