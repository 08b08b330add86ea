"""Accounts: Easel's own user model, custom from the first migration."""
from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils.translation import gettext_lazy as _
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS


def default_daily_image_quota() -> int:
    return settings.EASEL_DEFAULT_DAILY_IMAGE_QUOTA


def default_max_concurrent_tasks() -> int:
    return settings.EASEL_DEFAULT_MAX_CONCURRENT_TASKS


class EaselUserManager(UserManager):
    def get_by_natural_key(self, username: str):
        # Sign-in accepts a username or an e-mail address, case-insensitively.
        return self.get(models.Q(username__iexact=username) | models.Q(email__iexact=username))


class User(AbstractUser):
    """One person (or app) who signs in to the studio."""

    email = models.EmailField(_("email address"), blank=True)
    display_name = models.CharField(_("display name"), max_length=150, blank=True)
    daily_image_quota = models.PositiveIntegerField(
        _("daily image quota"),
        default=default_daily_image_quota,
        help_text=_("Images this user may generate per day (days follow the studio's time zone)."),
    )
    max_concurrent_tasks = models.PositiveIntegerField(
        _("concurrent task cap"),
        default=default_max_concurrent_tasks,
        help_text=_("Tasks this user may have running at once."),
    )
    priority = models.SmallIntegerField(
        _("queue priority"),
        default=0,
        help_text=_("Higher goes first when backends are busy (e.g. staff or paying users)."),
    )
    # When the dispatcher last gave one of this user's tasks a backend: the fair queue's
    # round-robin order, read in constant time (not from the user's whole history).
    last_served_at = models.DateTimeField(_("last served"), null=True, blank=True, editable=False)

    objects = EaselUserManager()

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            # One account per e-mail address, ignoring case; blank addresses are allowed.
            models.UniqueConstraint(
                models.functions.Lower("email"),
                condition=~models.Q(email=""),
                name="accounts_user_email_unique_ci",
            )
        ]

    def __str__(self) -> str:
        return self.display_name or self.username

    @property
    def shown_name(self) -> str:
        return self.display_name or self.username

    def save(self, *args, **kwargs):
        # A new password (changed by its owner, reset by staff, or set by a command)
        # revokes every API token: whoever learnt the old password may have made one.
        # Django sets `_password` only in set_password(), not when it merely rehashes
        # the same password at sign-in, so an upgrade of the hasher revokes nothing.
        changed = self.pk is not None and self._password is not None
        super().save(*args, **kwargs)
        if changed:
            ApiToken.objects.filter(user=self).delete()


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class ApiToken(AbstractAuthToken):
    """One API token. Only a hash of it is stored (knox); the clear text is shown once."""

    class Kind(models.TextChoices):
        # Made by signing in (or up) over the API: retired oldest first at the token limit.
        SIGN_IN = "sign-in", _("sign-in")
        SIGN_UP = "sign-up", _("sign-up")
        # Made on purpose for a script or an app: never retired to make room.
        PERSONAL = "personal", _("personal")

    # knox's own fields, declared again only to give them names in the reader's language
    # (knox has none, so the admin showed "Token key" and "Expiry"); the columns are knox's.
    digest = models.CharField(_("digest"), max_length=CONSTANTS.DIGEST_LENGTH, primary_key=True)
    token_key = models.CharField(
        _("starts with"), max_length=CONSTANTS.MAXIMUM_TOKEN_PREFIX_LENGTH + CONSTANTS.TOKEN_KEY_LENGTH, db_index=True
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="auth_token_set", verbose_name=_("user")
    )
    created = models.DateTimeField(_("created"), auto_now_add=True)
    expiry = models.DateTimeField(_("expires"), null=True, blank=True)

    name = models.CharField(_("name"), max_length=100, blank=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices, default=Kind.PERSONAL)
    # Webhooks for tasks created with this token are signed with this secret
    # (Standard Webhooks style); the URL is the default callback for such tasks.
    webhook_url = models.URLField(_("default webhook URL"), max_length=500, blank=True)
    webhook_secret = models.CharField(_("webhook secret"), max_length=100, default=_new_webhook_secret,
                                      editable=False)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.label} ({self.user})"

    @property
    def label(self) -> str:
        """Its name, or what made it (in the reader's language) when it has none."""
        return self.name or str(self.get_kind_display())
