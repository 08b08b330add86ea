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
from django.utils.translation import gettext as _

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


def token_create(*, user: User, expiry: timedelta | None = None, name: str = "") -> tuple[ApiToken, str]:
    """Issue an API token. The clear text is returned once; only its hash is stored."""
    ttl = expiry if expiry is not None else settings.REST_KNOX["TOKEN_TTL"]
    return ApiToken.objects.create(user=user, expiry=ttl, name=name)


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
