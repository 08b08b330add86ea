"""Writes on accounts: sign-up and API tokens."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from config.api_errors import ServiceError

from generation.errors import TaskStateError
from generation.models import ACTIVE_STATUSES, GenerationTask
from generation.services import generation_cancel

from .models import ApiToken

User = get_user_model()


def user_create(*, username: str, password: str, email: str = "", display_name: str = "") -> User:
    """Create an account after the same checks the sign-up page and the API make."""
    username = (username or "").strip()
    email = (email or "").strip()
    errors: dict[str, list[str]] = {}
    if not username:
        errors.setdefault("username", []).append(_("A username is required."))
    else:
        try:
            User.username_validator(username)
        except ValidationError as exc:
            errors.setdefault("username", []).extend(exc.messages)
        if "@" in username:
            errors.setdefault("username", []).append(_("A username cannot contain '@'."))
        elif User.objects.filter(username__iexact=username).exists():
            errors.setdefault("username", []).append(_("This username is taken."))
    if email:
        try:
            validate_email(email)
        except ValidationError as exc:
            errors.setdefault("email", []).extend(exc.messages)
        else:
            if User.objects.filter(email__iexact=email).exists():
                errors.setdefault("email", []).append(
                    _("An account with this e-mail address already exists.")
                )
    candidate = User(username=username, email=email, display_name=display_name)
    try:
        password_validation.validate_password(password or "", candidate)
    except ValidationError as exc:
        errors.setdefault("password", []).extend(exc.messages)
    if errors:
        raise ValidationError(errors)
    candidate.set_password(password)
    try:
        with transaction.atomic():
            candidate.save()
    except IntegrityError as exc:  # lost a race with a concurrent sign-up
        raise ValidationError({"username": [_("This username is taken.")]}) from exc
    return candidate


class TokenLimitReached(ServiceError):
    """The user holds as many live tokens as allowed, none of which may be retired."""

    code = "token_limit"
    status_code = 409


def live_tokens() -> Q:
    return Q(expiry__isnull=True) | Q(expiry__gt=timezone.now())


def token_create(
    *, user: User, kind: str = ApiToken.Kind.PERSONAL, expiry: timedelta | None = None, name: str = ""
) -> tuple[ApiToken, str]:
    """Issue an API token. The clear text is returned once; only its hash is stored.

    Every token counts against EASEL_TOKEN_LIMIT_PER_USER, however it was made. At the
    limit, a sign-in (or sign-up) retires the user's oldest sign-in tokens to make room:
    an app that signs in again and again never locks its owner out. Personal tokens
    are never retired: a new personal token at the limit is refused (TokenLimitReached),
    and so is a sign-in when personal tokens alone fill it.
    """
    limit = settings.REST_KNOX.get("TOKEN_LIMIT_PER_USER")
    ttl = expiry if expiry is not None else settings.REST_KNOX["TOKEN_TTL"]
    with transaction.atomic():
        # One issue at a time per user, so two sign-ins at once cannot both pass the count.
        User.objects.select_for_update().filter(pk=user.pk).exists()
        # The user's expired tokens go now: the token check on each request only looks
        # at the token presented (accounts.authentication).
        ApiToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
        if limit:
            live = ApiToken.objects.filter(user=user).filter(live_tokens())
            excess = live.count() + 1 - limit
            if excess > 0 and kind != ApiToken.Kind.PERSONAL:
                retired = list(
                    live.exclude(kind=ApiToken.Kind.PERSONAL).order_by("created", "pk").values_list("pk", flat=True)
                )[:excess]
                ApiToken.objects.filter(pk__in=retired).delete()
                excess -= len(retired)
            if excess > 0:
                raise TokenLimitReached(
                    _("You have %(n)d live tokens, the most allowed. Revoke one first.") % {"n": limit}
                )
        return ApiToken.objects.create(user=user, expiry=ttl, name=name, kind=kind)


def token_revoke(*, user: User, token_key: str) -> bool:
    deleted, _by_model = ApiToken.objects.filter(user=user, token_key=token_key).delete()
    return deleted > 0


def staff_ensure() -> tuple[str, str | None] | None:
    """Create a first staff account if there is none.

    Returns (username, password) where password is None when it came from the
    environment (so it is not printed), or None when a staff account already exists.
    """
    User = get_user_model()
    if User.objects.filter(is_staff=True).exists():
        return None
    username = os.environ.get("EASEL_ADMIN_USERNAME", "admin")
    password = os.environ.get("EASEL_ADMIN_PASSWORD")
    generated = password is None
    if generated:
        password = secrets.token_urlsafe(12)
    user = User.objects.filter(username=username).first() or User(username=username)
    user.email = os.environ.get("EASEL_ADMIN_EMAIL", user.email or "")
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return username, (password if generated else None)


def user_deactivate(*, user: User) -> dict:
    """Switch an account off: no sign-in, no API access, nothing left running.

    Their waiting and running tasks are cancelled through the same service as a user's
    own cancel (so prompts come off the backends), and every API token is deleted.
    Returns how many tasks were cancelled and tokens revoked.
    """
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    cancelled = 0
    for task in GenerationTask.objects.filter(user=user, status__in=ACTIVE_STATUSES).order_by("pk"):
        try:
            generation_cancel(task=task)
        except TaskStateError:
            continue  # it finished meanwhile
        cancelled += 1
    _total, by_model = ApiToken.objects.filter(user=user).delete()
    return {"tasks_cancelled": cancelled, "tokens_revoked": by_model.get(ApiToken._meta.label, 0)}
