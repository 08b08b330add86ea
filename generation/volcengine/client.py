"""Easel's client for VolcEngine's visual API (async text-to-image: submit, then poll), on the official SDK.

Requests are built and signed by the ``volcengine`` SDK's ``VisualService`` (never by hand); this module gives
Easel what it needs around it: one independent service object per client, answers turned into a ``Result`` with
the pictures' bytes, and every failure turned into a ``VolcError`` that says what happened in a message Easel can
translate, whether trying again may help, and whether a failed submit may still have created a task.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from volcengine.visual.VisualService import VisualService

from generation.comfy.errors import Message, gettext_noop

DEFAULT_HOST = "visual.volcengineapi.com"
#: The visual API signs with this region and service whatever the account's region (VolcEngine's docs).
DEFAULT_REGION = "cn-north-1"
SUBMIT, GET_RESULT = "CVSync2AsyncSubmitTask", "CVSync2AsyncGetResult"
SUCCESS = 10000
#: A task's states as the provider names them; the first two mean "still running".
RUNNING = frozenset({"in_queue", "generating"})
STATUSES = RUNNING | {"done", "not_found", "expired"}
#: A picture fetched from an ``image_urls`` entry may be at most this large.
MAX_IMAGE_BYTES = 64 * 1024 * 1024

# --- errors ----------------------------------------------------------------------------------------------------------

BAD_PARAMS, CONTENT_REFUSED, QUOTA, AUTH, THROTTLED, SERVER, UNREACHABLE, PROTOCOL, GONE = (
    "bad_params", "content_refused", "quota", "auth", "throttled", "server", "unreachable", "protocol", "gone")

_MESSAGES = {
    BAD_PARAMS: gettext_noop("VolcEngine refused the request's parameters (%(detail)s)"),
    QUOTA: gettext_noop("the VolcEngine account has no quota left or no access to this model (%(detail)s)"),
    AUTH: gettext_noop("VolcEngine refused the backend's access key (%(detail)s): check its access key id and "
                       "secret"),
    THROTTLED: gettext_noop("VolcEngine is busy: the account's request rate or concurrency limit was reached "
                            "(%(detail)s)"),
    SERVER: gettext_noop("VolcEngine had an internal error (%(detail)s)"),
    UNREACHABLE: gettext_noop("VolcEngine could not be reached (%(detail)s)"),
    PROTOCOL: gettext_noop("VolcEngine answered something Easel could not read (%(detail)s)"),
}
_PROMPT_REFUSED = gettext_noop("VolcEngine's content moderation refused the prompt or input picture (%(detail)s)")
_OUTPUT_REFUSED = gettext_noop("VolcEngine's content moderation refused the generated picture (%(detail)s)")
_NOT_FOUND = gettext_noop("VolcEngine no longer knows this task (it may have been forgotten after 12 hours)")
_EXPIRED = gettext_noop("the VolcEngine task expired before its pictures were fetched")

#: The visual API's business codes (its public error table), as (kind, retryable: the same call may succeed
#: later). The table calls a picture refused *after* generation (50511, 50519) retryable: that means a new task
#: (the owner's retry) may pass, while polling the refused task again gives the same refusal.
_BUSINESS_CODES = {
    50411: (CONTENT_REFUSED, False), 50412: (CONTENT_REFUSED, False), 50413: (CONTENT_REFUSED, False),
    50512: (CONTENT_REFUSED, False), 50518: (CONTENT_REFUSED, False),
    50511: (CONTENT_REFUSED, False), 50519: (CONTENT_REFUSED, False),
    50429: (THROTTLED, True), 50430: (THROTTLED, True),
    # The table advises against retrying these two; Easel retries them within the task's timeout all the same,
    # since an internal error of one call says nothing about the next.
    50500: (SERVER, True), 50501: (SERVER, True),
    50520: (SERVER, False), 50521: (SERVER, False), 50522: (SERVER, False),
    50400: (QUOTA, False),
}
_OUTPUT_REFUSALS = {50511, 50519}
#: The OpenAPI gateway's own refusals (``ResponseMetadata.Error.Code``), before the service sees the request.
_GATEWAY_CODES = {
    "MissingAuthenticationToken": (AUTH, False), "InvalidAccessKey": (AUTH, False),
    "SignatureDoesNotMatch": (AUTH, False), "InvalidTimestamp": (AUTH, False), "AccessDenied": (AUTH, False),
    "InvalidActionOrVersion": (PROTOCOL, False), "FlowLimitExceeded": (THROTTLED, True),
    "ServiceUnavailableTemp": (SERVER, True), "InternalError": (SERVER, True), "InternalServiceError": (SERVER, True),
    "InternalServiceTimeout": (SERVER, True), "AccountOverdue": (QUOTA, False), "ServiceNotOpen": (QUOTA, False),
}


class VolcError(Exception):
    """A VolcEngine call that did not give what was asked.

    ``kind``: one of the names above; ``retryable``: trying the same call later may succeed; ``maybe_accepted``:
    a submit whose answer was lost (the service may have created the task, so submitting again could run it twice);
    ``code``/``request_id``: the provider's, for support. ``message`` is the translatable text.
    """

    def __init__(self, kind: str, message: Message, *, retryable: bool, code: int | str | None = None,
                 request_id: str | None = None, maybe_accepted: bool = False) -> None:
        super().__init__(str(message))
        self.kind, self.message, self.retryable = kind, message, retryable
        self.code, self.request_id, self.maybe_accepted = code, request_id, maybe_accepted


def _error(kind: str, detail: str, *, retryable: bool, **extra: Any) -> VolcError:
    return VolcError(kind, Message(_MESSAGES[kind], detail=detail), retryable=retryable, **extra)


def _business_error(body: dict) -> VolcError:
    code, text = body.get("code"), str(body.get("message") or "")
    detail = f"{code} {text}".strip()
    kind, retryable = _BUSINESS_CODES.get(code, (BAD_PARAMS, False)) if isinstance(code, int) else (PROTOCOL, True)
    if kind == CONTENT_REFUSED:
        message = Message(_OUTPUT_REFUSED if code in _OUTPUT_REFUSALS else _PROMPT_REFUSED, detail=detail)
        return VolcError(kind, message, retryable=retryable, code=code, request_id=body.get("request_id"))
    return _error(kind, detail, retryable=retryable, code=code, request_id=body.get("request_id"))


def _gateway_error(meta: dict) -> VolcError:
    error = meta.get("Error") or {}
    code = str(error.get("Code") or "")
    kind, retryable = _GATEWAY_CODES.get(code, (SERVER, True) if code.startswith("Internal") else (PROTOCOL, False))
    return _error(kind, f"{code} {error.get('Message') or ''}".strip(), retryable=retryable, code=code,
                  request_id=meta.get("RequestId"))


def _answer_error(raw: Any) -> VolcError:
    """The SDK raises ``Exception(body bytes)`` for a non-200 answer: read the body VolcEngine sent."""
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("ResponseMetadata"), dict):
        return _gateway_error(body["ResponseMetadata"])
    if isinstance(body, dict) and "code" in body:
        return _business_error(body)
    # Not VolcEngine's JSON: a proxy's error page, most likely; the call did not reach the service.
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return _error(PROTOCOL, text[:200], retryable=True)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request surely never reached the service (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


# --- results ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One poll's answer: the provider's status and, once ``done``, the pictures' bytes (PNG or JPEG)."""

    status: str
    images: list[bytes] = field(default_factory=list)
    request_id: str | None = None

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    def failure(self) -> Message | None:
        """Why a task that stopped running has no pictures (None while running or when done)."""
        if self.status == "not_found":
            return Message(_NOT_FOUND)
        if self.status == "expired":
            return Message(_EXPIRED)
        return None


# --- the client ------------------------------------------------------------------------------------------------------

def _visual_service() -> VisualService:
    # VisualService is a process-wide singleton whose __init__ resets host, keys and session: two backends (or
    # two threads) would overwrite each other's settings. A private instance keeps each client's own.
    service = object.__new__(VisualService)
    VisualService.__init__(service)
    return service


class VolcClient:
    """One VolcEngine account (or the stand-in) as Easel talks to it. Not shared between threads."""

    def __init__(self, *, access_key_id: str, secret_access_key: str, host: str = DEFAULT_HOST,
                 scheme: str = "https", region: str = DEFAULT_REGION, timeout: float = 30.0) -> None:
        self.service = _visual_service()
        self.service.set_host(host)
        self.service.set_scheme(scheme)
        # Set even when empty: the SDK otherwise falls back to VOLC_ACCESSKEY or ~/.volc of whoever runs Easel.
        self.service.set_ak(access_key_id)
        self.service.set_sk(secret_access_key)
        self.service.service_info.credentials.region = region
        self.service.set_connection_timeout(timeout)
        self.service.set_socket_timeout(timeout)
        self.timeout = timeout

    def __repr__(self) -> str:  # never the secret
        info = self.service.service_info
        return f"VolcClient({info.scheme}://{info.host}, access_key_id={info.credentials.ak!r})"

    def _call(self, action: str, form: dict, *, submitting: bool = False) -> dict:
        try:
            # The SDK's json() signs and posts; its cv_* wrappers would flatten a network error and the error body
            # into one Exception string, losing what Easel needs to tell a refusal from an outage.
            raw = self.service.json(action, {}, json.dumps(form))
        except requests.RequestException as exc:
            never_sent = _never_sent(exc)
            raise _error(UNREACHABLE, type(exc).__name__, retryable=True,
                         maybe_accepted=submitting and not never_sent) from exc
        except Exception as exc:  # noqa: BLE001 - the SDK's only signal for an error answer
            raise _answer_error(exc.args[0] if exc.args else b"") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _error(PROTOCOL, "not JSON", retryable=True, maybe_accepted=submitting) from exc
        if not isinstance(body, dict):
            raise _error(PROTOCOL, "not a JSON object", retryable=True, maybe_accepted=submitting)
        if body.get("code") != SUCCESS:
            raise _business_error(body)
        return body

    def submit(self, req_key: str, params: dict) -> str:
        """Start a task for model ``req_key`` with ``params`` (prompt, width, height, seed, ...); its task id."""
        body = self._call(SUBMIT, {**params, "req_key": req_key}, submitting=True)
        task_id = (body.get("data") or {}).get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise _error(PROTOCOL, "no task_id", retryable=False, maybe_accepted=True,
                         request_id=body.get("request_id"))
        return task_id

    def result(self, req_key: str, task_id: str, *, return_url: bool = False) -> Result:
        """Poll a task once; when done, with its pictures (decoded, or downloaded when ``return_url``)."""
        form = {"req_key": req_key, "task_id": task_id, "req_json": json.dumps({"return_url": return_url})}
        body = self._call(GET_RESULT, form)
        data = body.get("data") or {}
        status = data.get("status")
        if status not in STATUSES:
            raise _error(PROTOCOL, f"status {status!r}", retryable=True, request_id=body.get("request_id"))
        images: list[bytes] = []
        if status == "done":
            images = [self._decode(item) for item in data.get("binary_data_base64") or []]
            images += [self._download(url) for url in data.get("image_urls") or []] if not images else []
            if not images:
                raise _error(PROTOCOL, "done without pictures", retryable=True, request_id=body.get("request_id"))
        return Result(status=status, images=images, request_id=body.get("request_id"))

    @staticmethod
    def _decode(item: Any) -> bytes:
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise _error(PROTOCOL, "a picture that is not base64", retryable=True) from exc

    def _download(self, url: Any) -> bytes:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _error(PROTOCOL, "a picture URL that is not http(s)", retryable=False)
        try:
            with requests.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise _error(UNREACHABLE, f"picture download: HTTP {response.status_code}", retryable=True)
                chunks, size = [], 0
                for chunk in response.iter_content(1 << 16):
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise _error(PROTOCOL, "a picture larger than 64 MiB", retryable=False)
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.RequestException as exc:
            raise _error(UNREACHABLE, f"picture download: {type(exc).__name__}", retryable=True) from exc
