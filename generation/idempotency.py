"""Idempotent creates: a client retrying a create with the same `Idempotency-Key` gets the
task its first try created, never a second task (nor a second quota charge).

Follows the IETF draft "The Idempotency-Key HTTP Header Field" (httpapi-idempotency-key-
header): keys are per user and kept for `KEEP`; the same key with a different request is
refused (422). Two requests racing with one key never both create: the key's row is
inserted in the transaction that creates the task, so the second insert waits on the
unique index until the first transaction ends, then reads the winner's task (PostgreSQL
blocks on the index entry; SQLite's IMMEDIATE transactions take the write lock at their
start). The loser therefore answers with the winner's task rather than the draft's
optional 409 "in progress": the creating transaction holds no network call and ends in
milliseconds.

`with_idempotency` is the one entry point, for every create endpoint (the generation API,
the OpenAI-compatible one).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import status

from .errors import GenerationError
from .models import GenerationTask, IdempotencyKey

KEEP = timedelta(hours=24)
KEY_MAX_LENGTH = IdempotencyKey._meta.get_field("key").max_length


class IdempotencyKeyInvalid(GenerationError):
    """The header is empty, too long, or holds characters a header value cannot."""

    code = "idempotency_key_invalid"
    status_code = status.HTTP_400_BAD_REQUEST


class IdempotencyKeyReused(GenerationError):
    """The key was used, within `KEEP`, for a different request."""

    code = "idempotency_key_reused"
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


class IdempotencyKeyBusy(GenerationError):
    """Another request with the key is being answered (IETF draft: 409)."""

    code = "idempotency_key_in_progress"
    status_code = status.HTTP_409_CONFLICT

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def idempotency_key_clean(raw: str | None) -> str | None:
    """The key of a header value (None: no header). The draft makes it a structured-field
    String (`"abc"`); the bare form most clients send (Stripe's) is taken too."""
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise IdempotencyKeyInvalid(_("The Idempotency-Key header is empty."))
    if len(key) > KEY_MAX_LENGTH:
        raise IdempotencyKeyInvalid(
            _("The Idempotency-Key header is longer than %(n)d characters.") % {"n": KEY_MAX_LENGTH})
    if not all(" " <= ch <= "~" for ch in key):
        raise IdempotencyKeyInvalid(_("The Idempotency-Key header may hold only printable ASCII characters."))
    return key


def body_fingerprint(operation: str, body) -> str:
    """A hash of the request as the create understands it: the operation's name and the
    body as canonical JSON (sorted keys), so a reordered or re-spaced body is the same
    request. A form body's repeated fields keep all their values."""
    if hasattr(body, "lists"):  # a QueryDict
        body = {k: v if len(v) != 1 else v[0] for k, v in body.lists()}
    elif isinstance(body, Mapping):
        body = dict(body)
    canonical = json.dumps([operation, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_idempotency(
    *, user, key: str | None, fingerprint: str, create_fn: Callable[[], GenerationTask]
) -> tuple[GenerationTask, bool]:
    """Create through `create_fn` once per (user, key): answers (task, replayed).

    No key: `create_fn()` as is. A key seen within `KEEP` with the same fingerprint: its
    task, replayed=True, and `create_fn` is not called. With another fingerprint:
    IdempotencyKeyReused. A create that fails (validation, quota) stores no key, so the
    client may fix the request and retry with the same key.
    """
    if key is None:
        return create_fn(), False
    # Two rounds: a winner that failed and rolled back leaves no row, so the loser creates.
    for _round in range(2):
        with transaction.atomic():
            IdempotencyKey.objects.filter(user=user, key=key, created_at__lt=timezone.now() - KEEP).delete()
            try:
                with transaction.atomic():  # only the key's insert: an IntegrityError of the create is its own
                    record = IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint)
            except IntegrityError:
                record = None
            if record is not None:
                task = create_fn()
                record.task = task
                record.save(update_fields=["task"])
                return task, False
        record = IdempotencyKey.objects.filter(user=user, key=key).select_related("task").first()
        if record is None:
            continue
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(_(
                "This Idempotency-Key was already used for a different request. Send a new key for a new "
                "request."))
        if record.task is not None:
            return record.task, True
    # Only when the key's row vanished twice between the insert and the read (its task deleted meanwhile).
    raise IdempotencyKeyBusy(_("Another request with this Idempotency-Key is in progress; retry in a moment."))

def idempotency_keys_expire(*, now: datetime | None = None) -> int:
    """Forget keys older than `KEEP` (the daily "easel-idempotency-keys" schedule)."""
    deleted, _detail = IdempotencyKey.objects.filter(created_at__lt=(now or timezone.now()) - KEEP).delete()
    return deleted
