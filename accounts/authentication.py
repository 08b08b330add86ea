"""Bearer tokens for the API: knox's hashed, expiring tokens, read once per request."""
from __future__ import annotations

import binascii
from hmac import compare_digest

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS, knox_settings
from knox.signals import token_expired
from rest_framework import exceptions

from config.prepared import Prepared


def _token_query(key):
    token_model, user_model = get_token_model(), get_user_model()
    return token_model.objects.filter(token_key=key).values_list(
        *(f.attname for f in token_model._meta.concrete_fields),
        *(f"user__{f.attname}" for f in user_model._meta.concrete_fields),
    )


# The tokens sharing the presented token's key, each with its user, in one statement
# compiled once (accounts.authentication is on every API call, the status poll included).
_TOKENS = Prepared(_token_query, arguments=1, markers=("<easel token key marker>",))


def _tokens(key: str, using: str) -> list:
    """The rows knox's `filter(token_key=...).select_related("user")` reads, as instances
    made the way the ORM makes them (`from_db`), the user cached on its token."""
    token_model, user_model = get_token_model(), get_user_model()
    split = len(token_model._meta.concrete_fields)
    user_field = token_model._meta.get_field("user")
    tokens = []
    for row in _TOKENS.rows(key, using=using):
        token = token_model.from_db(using, [f.attname for f in token_model._meta.concrete_fields], row[:split])
        user = user_model.from_db(using, [f.attname for f in user_model._meta.concrete_fields], row[split:])
        user_field.set_cached_value(token, user)
        tokens.append(token)
    return tokens


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token check without its sweep of the caller's other tokens.

    knox (5.1) reads every token of the caller on each request to delete the expired ones:
    a second query, of up to TOKEN_LIMIT_PER_USER rows, on the call app clients poll every
    two seconds. Only the presented token's own expiry matters to the request; the user's
    other expired tokens never count nor show (`accounts.services.live_tokens`) and are
    removed when the user is issued a new one (`token_create`).
    """

    def authenticate_credentials(self, token: bytes):
        """knox's own (5.1), line for line, reading the tokens with `_tokens` rather than
        a queryset built on every call."""
        msg = _("Invalid token.")
        token = token.decode("utf-8")
        for auth_token in _tokens(token[:CONSTANTS.TOKEN_KEY_LENGTH], get_token_model().objects.db):
            if self._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(token)
            except (TypeError, binascii.Error):
                raise exceptions.AuthenticationFailed(msg)
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(msg)

    def _cleanup_token(self, auth_token) -> bool:
        # knox's own handling of the presented token: an expired one is deleted and refused.
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of knox's tokens, for this subclass (drf-spectacular
    matches the exact class), under knox's name so the schema stays as it was."""

    target_class = "accounts.authentication.TokenAuthentication"
