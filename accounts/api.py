"""Account endpoints of the API: register, login, me, and the caller's tokens."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.utils.translation import gettext as _, gettext_lazy
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import ApiError, error_response
from config.api_input import JsonInput
from config.throttling import ScopedThrottle

from .lockout import client_ip, login_failure_record, login_failures_clear, login_locked_for
from .models import ApiToken
from .serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateInput,
    ApiTokenSerializer,
    TokenIssuedSerializer,
    UserSerializer,
)
from .services import live_tokens, token_create, token_revoke, user_create


def _token_body(user, instance: ApiToken, token: str) -> dict:
    return {"token": token, "expiry": instance.expiry, "user": UserSerializer(user).data}


# --- failed sign-ins: the rule is accounts.lockout's, shared with the pages and the admin ---


def login_failures_check(*, username: str, ip: str) -> None:
    """Refuse with 429 while this account has used up its failed attempts from this IP."""
    wait = login_locked_for(username=username, ip=ip)
    if wait:
        raise exceptions.Throttled(
            wait=wait,
            detail=_("Too many failed sign-in attempts. Try again in %(n)d seconds.") % {"n": wait},
        )


TOKEN_ISSUED_EXAMPLE = OpenApiExample(
    "Token",
    value={"token": "3f1c2a…(shown once)", "expiry": "2025-12-01T16:23:19Z",
           "user": {"id": 1, "username": "ann", "email": "ann@example.com", "display_name": "", "is_staff": False,
                    "daily_image_quota": 200, "max_concurrent_tasks": 2, "date_joined": "2025-11-01T16:23:19Z"}},
    response_only=True,
)


class AuthLoginApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "login"  # per client IP, whatever the username
    throttle_classes = [ScopedThrottle]

    class InputSerializer(JsonInput):
        username = serializers.CharField(max_length=254, help_text="Username or e-mail address.")
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    @extend_schema(
        operation_id="auth_login",
        summary="Sign in: get a token",
        description=(
            "Answers a new token (clear text, shown once) with its expiry. Limited per client IP; after "
            "`EASEL_LOGIN_MAX_FAILURES` wrong passwords for one account from one IP (counted together with "
            "the sign-in page and the admin's login), 429 until `retry_after` seconds have passed."
        ),
        request=InputSerializer,
        responses={
            200: OpenApiResponse(TokenIssuedSerializer, examples=[TOKEN_ISSUED_EXAMPLE]),
            401: error_response(401, description=gettext_lazy("Wrong username or password."), examples=[
                OpenApiExample("Wrong password", value={"error": {"code": "invalid_credentials", "message":
                               "Wrong username or password.", "fields": {}}}, status_codes=["401"],
                               response_only=True)]),
            409: error_response(409, description=gettext_lazy(
                "Personal tokens alone fill the per-user token limit; revoke one first.")),
        },
        tags=["auth"],
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username, ip = data.validated_data["username"], client_ip(request)
        login_failures_check(username=username, ip=ip)
        user = authenticate(request, **data.validated_data)
        if user is None:
            login_failure_record(username=username, ip=ip)
            raise ApiError(
                code="invalid_credentials",
                message=_("Wrong username or password."),
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        login_failures_clear(username=username, ip=ip)
        instance, token = token_create(user=user, kind=ApiToken.Kind.SIGN_IN)
        return Response(_token_body(user, instance, token))


class AuthRegisterApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "register"
    throttle_classes = [ScopedThrottle]

    class InputSerializer(JsonInput):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)
        email = serializers.EmailField(required=False, allow_blank=True)
        display_name = serializers.CharField(max_length=150, required=False, allow_blank=True)

    @extend_schema(
        operation_id="auth_register",
        summary="Create an account and get a token",
        request=InputSerializer,
        responses={
            201: OpenApiResponse(TokenIssuedSerializer, examples=[TOKEN_ISSUED_EXAMPLE]),
            403: error_response(403, description=gettext_lazy("Sign-up is closed.")),
        },
        tags=["auth"],
    )
    def post(self, request):
        if not settings.EASEL_ALLOW_SIGNUP:
            raise ApiError(code="signup_closed", message=_("Sign-up is closed."), status_code=403)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        instance, token = token_create(user=user, kind=ApiToken.Kind.SIGN_UP)
        return Response(_token_body(user, instance, token), status=status.HTTP_201_CREATED)


class AuthMeApi(APIView):
    @extend_schema(operation_id="auth_me", summary="The caller's account", responses={200: UserSerializer},
                   tags=["auth"])
    def get(self, request):
        return Response(UserSerializer(request.user).data)


class AuthLogoutApi(APIView):
    """Revoke the token this request was made with."""

    @extend_schema(operation_id="auth_logout", summary="Revoke the token of this request", request=None,
                   responses={204: None}, tags=["auth"])
    def post(self, request):
        if isinstance(request.auth, ApiToken):
            request.auth.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenListApi(APIView):
    """The caller's live tokens, and personal tokens for scripts and apps."""

    OutputSerializer = ApiTokenSerializer  # kept for code that refers to it

    @extend_schema(
        operation_id="auth_tokens_list",
        summary="The caller's live tokens (never the token text)",
        responses={200: inline_serializer("ApiTokenList", fields={"results": ApiTokenSerializer(many=True)})},
        tags=["auth"],
    )
    def get(self, request):
        tokens = (
            ApiToken.objects.filter(user=request.user).filter(live_tokens()).order_by("-created", "-pk")
        )
        context = {"request": request}
        return Response({"results": ApiTokenSerializer(tokens, many=True, context=context).data})

    @extend_schema(
        operation_id="auth_tokens_create",
        summary="Create a personal API token",
        description=(
            "The answer holds the token in clear text: it is shown this once, Easel keeps only a hash. "
            "Tokens expire after `expires_in_days` (at most 365), or the default lifetime when null."
        ),
        request=ApiTokenCreateInput,
        responses={
            201: ApiTokenCreatedSerializer,
            409: error_response(409, description=gettext_lazy("Too many live tokens; revoke one first.")),
        },
        tags=["auth"],
    )
    def post(self, request):
        data = ApiTokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        days = data.validated_data.get("expires_in_days")
        instance, token = token_create(
            user=request.user,
            expiry=timedelta(days=days) if days else None,
            name=data.validated_data["name"],
        )
        body = ApiTokenSerializer(instance, context={"request": request}).data
        return Response({"token": token, **body}, status=status.HTTP_201_CREATED)


class TokenRevokeApi(APIView):
    @extend_schema(
        operation_id="auth_tokens_revoke",
        summary="Revoke one of the caller's tokens",
        parameters=[OpenApiParameter("token_key", str, OpenApiParameter.PATH,
                                     description="The `token_key` from the token list.")],
        responses={204: None},
        tags=["auth"],
    )
    def delete(self, request, token_key: str):
        if not token_revoke(user=request.user, token_key=token_key):
            raise ApiError(code="not_found", message=_("No such token."), status_code=404)
        return Response(status=status.HTTP_204_NO_CONTENT)
