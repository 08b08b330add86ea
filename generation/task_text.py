"""Messages the worker writes on a task for its owner, kept translatable.

The worker runs in the default language, but the owner may read Chinese. So next to
the English text (kept for logs, the admin's search and webhooks) a task stores the
message id and its parameters, and pages and the API render them again with gettext
in the reader's language. Message ids are marked with `gettext_noop` where they are
written, so makemessages finds them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.translation import gettext


@dataclass(frozen=True)
class Text:
    msgid: str
    params: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.msgid % self.params if self.params else self.msgid

    def stored(self) -> dict:
        return {"msgid": self.msgid, "params": self.params}


def text(msgid: str, **params) -> Text:
    return Text(msgid, {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in params.items()})


def message_fields(prefix: str, value: Text | str) -> dict:
    """The model fields for one message: `<prefix>_message` (English) and `<prefix>_params`."""
    if isinstance(value, Text):
        return {f"{prefix}_message": str(value), f"{prefix}_params": value.stored()}
    return {f"{prefix}_message": value, f"{prefix}_params": {}}


def render(stored, english: str) -> str:
    """The message in the active language; the stored English when it cannot be rendered
    (a plain message, or a message id whose placeholders changed since)."""
    msgid = stored.get("msgid") if english and isinstance(stored, dict) else None
    if not msgid:
        return english
    params = stored.get("params") or {}
    try:
        return gettext(msgid) % params if params else gettext(msgid)
    except (KeyError, TypeError, ValueError):
        return english
