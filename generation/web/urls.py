"""The studio's pages (the JSON API's URLs are generation.api.urls)."""
from django.urls import path

from . import files, generate, history, sharing, tasks

app_name = "generation"

urlpatterns = [
    path("", generate.generate, name="generate"),
    path("history/", history.history, name="history"),
    path("history/delete/", history.history_delete, name="history_delete"),
    path("history/download.zip", history.history_zip, name="history_zip"),
    path("tasks/<int:task_id>/", tasks.task_detail, name="task"),
    path("tasks/<int:task_id>/card/", generate.workspace_card, name="task_card"),
    path("tasks/<int:task_id>/state.json", tasks.task_state, name="task_state"),
    path("tasks/<int:task_id>/preview.jpg", tasks.task_preview, name="task_preview"),
    path("tasks/<int:task_id>/cancel/", tasks.task_cancel, name="task_cancel"),
    path("tasks/<int:task_id>/retry/", tasks.task_retry, name="task_retry"),
    path("tasks/<int:task_id>/vary/", tasks.task_vary, name="task_vary"),
    path("tasks/<int:task_id>/share/", tasks.task_share_view, name="task_share"),
    path("tasks/<int:task_id>/unshare/", tasks.task_unshare_view, name="task_unshare"),
    path("tasks/<int:task_id>/download.zip", tasks.task_zip, name="task_zip"),
    path("tasks/<int:task_id>/delete/", tasks.task_delete, name="task_delete"),
    path("images/<int:image_id>/", files.image_file, name="image"),
    path("images/<int:image_id>/thumb/", files.image_thumbnail, name="image_thumb"),
    path("images/<int:image_id>/use-as-source/", tasks.image_use_as_source, name="image_use_as_source"),
    path("sources/<int:source_id>/", files.source_file, name="source_file"),
    # Public share links: no sign-in, the token is the key.
    path("s/<str:token>/", sharing.shared_task, name="shared_task"),
    path("s/<str:token>/images/<int:image_id>/", sharing.shared_image, name="shared_image"),
    path("s/<str:token>/images/<int:image_id>/thumb/", sharing.shared_image_thumb, name="shared_image_thumb"),
]
