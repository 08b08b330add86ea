"""The studio's pages (the JSON API lives in api_urls.py)."""
from django.urls import path

from . import views

app_name = "generation"

urlpatterns = [
    path("", views.generate, name="generate"),
    path("history/", views.history, name="history"),
    path("history/delete/", views.history_delete, name="history_delete"),
    path("history/download.zip", views.history_zip, name="history_zip"),
    path("tasks/<int:task_id>/", views.task_detail, name="task"),
    path("tasks/<int:task_id>/state.json", views.task_state, name="task_state"),
    path("tasks/<int:task_id>/preview.jpg", views.task_preview, name="task_preview"),
    path("tasks/<int:task_id>/cancel/", views.task_cancel, name="task_cancel"),
    path("tasks/<int:task_id>/retry/", views.task_retry, name="task_retry"),
    path("tasks/<int:task_id>/vary/", views.task_vary, name="task_vary"),
    path("tasks/<int:task_id>/share/", views.task_share_view, name="task_share"),
    path("tasks/<int:task_id>/unshare/", views.task_unshare_view, name="task_unshare"),
    path("tasks/<int:task_id>/download.zip", views.task_zip, name="task_zip"),
    path("tasks/<int:task_id>/delete/", views.task_delete, name="task_delete"),
    path("images/<int:image_id>/", views.image_file, name="image"),
    path("images/<int:image_id>/thumb/", views.image_thumbnail, name="image_thumb"),
    path("images/<int:image_id>/use-as-source/", views.image_use_as_source, name="image_use_as_source"),
    path("sources/<int:source_id>/", views.source_file, name="source_file"),
    # Public share links: no sign-in, the token is the key.
    path("s/<str:token>/", views.shared_task, name="shared_task"),
    path("s/<str:token>/images/<int:image_id>/", views.shared_image, name="shared_image"),
    path("s/<str:token>/images/<int:image_id>/thumb/", views.shared_image_thumb, name="shared_image_thumb"),
]
