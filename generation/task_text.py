"""Messages the worker writes on a task for its owner, kept translatable.

The worker runs in the default language, but the owner may read Chinese. So next to
the English text (kept for logs, the admin's search and webhooks) a task stores the
message id and its parameters, and pages and the API render them again with gettext
in the reader's language. Message ids are marked with `gettext_noop` where they are
written, so makemessages finds them. A parameter may be a message itself (stored the
same way, rendered the same way), for messages made of messages.
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
        return {"msgid": self.msgid,
                "params": {k: v.stored() if isinstance(v, Text) else v for k, v in self.params.items()}}


def text(msgid: str, **params) -> Text:
    return Text(msgid, {k: (v if isinstance(v, (int, float, Text)) else str(v)) for k, v in params.items()})


def message_fields(prefix: str, value: Text | str) -> dict:
    """The model fields for one message: `<prefix>_message` (English) and `<prefix>_params`."""
    if isinstance(value, Text):
        return {f"{prefix}_message": str(value), f"{prefix}_params": value.stored()}
    return {f"{prefix}_message": value, f"{prefix}_params": {}}


def field_messages(fields: dict) -> tuple[dict, dict]:
    """Messages by parameter ({field: [message]}), as (English, message ids and parameters):
    the English is the task's `error_fields` (what the API promises), the rest goes
    beside the error's own message id (`error_params["fields"]`)."""
    english = {key: [str(m) for m in messages] for key, messages in fields.items()}
    stored = {key: [m.stored() if isinstance(m, Text) else {} for m in messages] for key, messages in fields.items()}
    return english, stored


def render_fields(stored: dict, english: dict) -> dict:
    """error_fields in the active language, message by message (English where a message
    has no id stored)."""
    out = {}
    for key, messages in (english or {}).items():
        messages = messages if isinstance(messages, list) else [messages]
        kept = (stored or {}).get(key) or []
        out[key] = [render(kept[i] if i < len(kept) else {}, str(m)) for i, m in enumerate(messages)]
    return out


def render(stored, english: str) -> str:
    """The message in the active language; the stored English when it cannot be rendered
    (a plain message, or a message id whose placeholders changed since)."""
    msgid = stored.get("msgid") if english and isinstance(stored, dict) else None
    if not msgid:
        return english
    try:
        return _rendered(stored)
    except (KeyError, TypeError, ValueError, AttributeError):
        return english


def _rendered(stored: dict) -> str:
    params = {k: _rendered(v) if isinstance(v, dict) else v for k, v in (stored.get("params") or {}).items()}
    return gettext(stored["msgid"]) % params if params else gettext(stored["msgid"])
