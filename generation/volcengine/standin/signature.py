"""Checks a request signed by the ``volcengine`` SDK (its ``SignerV4``: HMAC-SHA256, credential scope
``date/region/service/request``), the way VolcEngine's OpenAPI gateway does before a request reaches the service.

The canonical request is rebuilt from what arrived on the wire (method, path, query, the signed headers' values,
the body's own SHA-256), never from what the client claims, so a tampered body or query fails like a wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping
from urllib.parse import quote

ALGORITHM = "HMAC-SHA256"
#: How far the ``X-Date`` may be from the stand-in's clock (VolcEngine documents a 15-minute window for the
#: URL-signed variant; the same window is used for header signing here).
CLOCK_SKEW_SECONDS = 15 * 60

_AUTHORIZATION = re.compile(
    r"^HMAC-SHA256 Credential=(?P<ak>[^/]*)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;\-]+), Signature=(?P<signature>[0-9a-f]{64})$")


@dataclass(frozen=True)
class Refusal:
    """Why the gateway refuses a request: its HTTP status and the ``ResponseMetadata.Error`` it answers."""

    status: int
    code: str
    code_n: int
    message: str


MISSING = Refusal(401, "MissingAuthenticationToken", 100001,
                  "The request must contain a valid Authorization header.")
INVALID_ACCESS_KEY = Refusal(401, "InvalidAccessKey", 100009, "The access key id you provided does not exist.")
SIGNATURE_MISMATCH = Refusal(
    401, "SignatureDoesNotMatch", 100010,
    "The request signature we calculated does not match the signature you provided. Check your Secret Access Key "
    "and signing method. Consult the service documentation for details.")
EXPIRED = Refusal(401, "InvalidTimestamp", 100011, "The request's X-Date is too far from the server's time.")


def _quote(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(query: Mapping[str, list[str]]) -> str:
    """``Util.norm_query``: keys sorted, keys and values percent-encoded (RFC 3986 unreserved kept)."""
    parts = []
    for key in sorted(query):
        for value in query[key]:
            parts.append(f"{_quote(key)}={_quote(value)}")
    return "&".join(parts).replace("+", "%20")


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(secret.encode("utf-8"), date.encode("utf-8"), hashlib.sha256).digest()
    for part in (region, service, "request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _header_value(name: str, value: str) -> str:
    # The SDK drops a default port from the Host it signs (it sends Host: host:80 unchanged).
    if name == "host" and ":" in value and value.rsplit(":", 1)[1] in ("80", "443"):
        return value.rsplit(":", 1)[0]
    return value


def check(*, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes,
          keys: Mapping[str, str], region: str, service: str, now: datetime | None = None) -> Refusal | None:
    """None when the request is signed by one of ``keys`` ({access key id: secret}) for ``region``/``service``;
    otherwise the gateway's refusal."""
    found = _AUTHORIZATION.match(headers.get("Authorization", ""))
    x_date = headers.get("X-Date", "")
    if not found or not x_date:
        return MISSING
    secret = keys.get(found["ak"])
    if secret is None:
        return INVALID_ACCESS_KEY
    try:
        signed_at = datetime.strptime(x_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return EXPIRED
    now = now or datetime.now(timezone.utc)
    if abs((now - signed_at).total_seconds()) > CLOCK_SKEW_SECONDS:
        return EXPIRED
    if found["date"] != x_date[:8] or found["region"] != region or found["service"] != service:
        return SIGNATURE_MISMATCH
    body_hash = hashlib.sha256(body).hexdigest()
    signed = found["signed"].split(";")
    lines = []
    for name in signed:
        # The body's hash is recomputed: the client's X-Content-Sha256 must match the body that arrived.
        value = body_hash if name == "x-content-sha256" else headers.get(name)
        if value is None:
            return SIGNATURE_MISMATCH
        lines.append(f"{name}:{_header_value(name, value)}\n")
    if "x-content-sha256" in signed and headers.get("X-Content-Sha256") != body_hash:
        return SIGNATURE_MISMATCH
    canonical = "\n".join([method, quote(path).replace("%2F", "/").replace("+", "%20"), canonical_query(query),
                           "".join(lines), found["signed"], body_hash])
    scope = f"{found['date']}/{region}/{service}/request"
    to_sign = "\n".join([ALGORITHM, x_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    expected = hmac.new(signing_key(secret, found["date"], region, service), to_sign.encode("utf-8"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, found["signature"]):
        return SIGNATURE_MISMATCH
    return None
