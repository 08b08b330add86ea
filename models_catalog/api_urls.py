from django.urls import path

from . import api

urlpatterns = [
    path("templates", api.TemplateListApi.as_view(), name="api-templates"),
    path("templates/<slug:slug>", api.TemplateDetailApi.as_view(), name="api-template"),
]
