"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what a receiver checks."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

SECRET_PREFIX = "whsec_"


def webhook_sign(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `webhook-signature` value for one attempt."""
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    key = base64.b64decode(raw)
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def payload_bytes(payload: dict) -> bytes:
    # Sorted keys and no spaces: the same bytes on every attempt and every database
    # (PostgreSQL's jsonb does not keep key order).
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
