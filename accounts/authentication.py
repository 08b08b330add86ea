"""Bearer tokens for the API: knox's hashed, expiring tokens, read once per request."""
from __future__ import annotations

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.signals import token_expired


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's token check without its sweep of the caller's other tokens.

    knox (5.1) reads every token of the caller on each request to delete the expired ones:
    a second query, of up to TOKEN_LIMIT_PER_USER rows, on the call app clients poll every
    two seconds. Only the presented token's own expiry matters to the request; the user's
    other expired tokens never count nor show (`accounts.services.live_tokens`) and are
    removed when the user is issued a new one (`token_create`).
    """

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
