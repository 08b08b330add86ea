from django.urls import path

from . import upload_api

urlpatterns = [
    path("uploads", upload_api.UploadListCreateApi.as_view(), name="api-uploads"),
    path("uploads/from-result/<int:image_id>", upload_api.UploadFromResultApi.as_view(),
         name="api-upload-from-result"),
    path("uploads/<int:source_id>", upload_api.UploadDetailApi.as_view(), name="api-upload-detail"),
    path("uploads/<int:source_id>/file", upload_api.UploadFileApi.as_view(), name="api-upload-file"),
]
