from django.urls import path

from . import api

urlpatterns = [
    path("login", api.AuthLoginApi.as_view(), name="api-auth-login"),
    path("register", api.AuthRegisterApi.as_view(), name="api-auth-register"),
    path("me", api.AuthMeApi.as_view(), name="api-auth-me"),
    path("logout", api.AuthLogoutApi.as_view(), name="api-auth-logout"),
    path("tokens", api.TokenListApi.as_view(), name="api-auth-tokens"),
    path("tokens/<str:token_key>", api.TokenRevokeApi.as_view(), name="api-auth-token-revoke"),
]
