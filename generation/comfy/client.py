"""Blocking HTTP + websocket client for one ComfyUI server (written against 0.3.64).

Every failure surfaces as a ComfyError subclass so the job runner only has to decide
between "retry later" (ComfyUnreachable, see errors.is_transient) and "tell the user"
(ComfyPromptRejected) without knowing about urllib3 or websocket-client.
"""

from __future__ import annotations

import json
import mimetypes
import os
import socket
import threading
import time
import urllib.request
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import certifi
import urllib3
import websocket

from .events import Event, Preview, TextFrame, parse_binary, parse_text

_CHUNK = 64 * 1024
# A reverse proxy in front of ComfyUI answers these while ComfyUI restarts or is down.
_GATEWAY_STATUSES = frozenset({502, 503, 504})


class ComfyError(Exception):
    """Base class of everything this package raises."""


class ComfyUnreachable(ComfyError):
    """The server could not be reached (refused, reset, DNS, timeout, 502/503/504)."""


class ComfySocketClosed(ComfyUnreachable):
    """The websocket dropped; reconnect (see ComfySocket for the same-clientId trap)."""


class ComfyPromptRejected(ComfyError):
    """POST /prompt refused the graph (400 JSON, 500 text/plain, or 200 with node_errors)."""

    def __init__(self, status: int, body: dict | str):
        self.status = status
        self.body = body
        parsed = body if isinstance(body, dict) else {}
        error = parsed.get("error")
        # Older servers sent `error` as a bare string; keep the dict shape for callers.
        if isinstance(error, str):
            error = {"type": "error", "message": error, "details": "", "extra_info": {}}
        self.error: dict | None = error if isinstance(error, dict) else None
        node_errors = parsed.get("node_errors")
        self.node_errors: dict = node_errors if isinstance(node_errors, dict) else {}
        super().__init__(self._summary())

    def _summary(self) -> str:
        if self.error:
            return f"prompt rejected (HTTP {self.status}): {self.error.get('message') or self.error.get('type')}"
        if self.node_errors:
            return f"prompt rejected (HTTP {self.status}): node errors in {sorted(self.node_errors)}"
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)[:200]
        return f"prompt rejected (HTTP {self.status}): {text.strip()[:200]}"


class ComfyProtocolError(ComfyError):
    """Any other unexpected answer (bad status, non-JSON body, unexpected shape)."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class ComfyNotFound(ComfyProtocolError):
    """404, e.g. /view of a file that is gone (temp outputs are wiped on server restart)."""


_pools = threading.local()


class HttpPool:
    """The HTTP connections of this thread (and process) to one backend.

    Kept per thread, the connections stay alive from one call and one task to the next
    (urllib3 notices one the server closed meanwhile before it is used); per process too:
    a forked worker never shares its parent's sockets. urllib3 without requests on top:
    over 2,000 GETs to a demo engine, requests cost 0.96 ms of the client's CPU a call and
    urllib3 0.34, and a pump makes two calls a task.

    What requests read from the environment is read once: the proxy for this URL (HTTP_PROXY,
    HTTPS_PROXY, NO_PROXY...) and a CA bundle for https backends (REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE, else certifi's, as requests does).
    """

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        host = f"{parts.hostname or ''}:{parts.port}" if parts.port else (parts.hostname or "")
        proxies = urllib.request.getproxies()
        self.proxy = None if urllib.request.proxy_bypass(host) else (proxies.get(parts.scheme) or proxies.get("all"))
        ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        options = {"num_pools": 1, "maxsize": 1, "retries": False, "cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs}
        self.manager = (urllib3.ProxyManager(self.proxy, **options) if self.proxy
                        else urllib3.PoolManager(**options))

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        return self.manager.request(method, url, redirect=False, **kwargs)


def shared_pool(base_url: str) -> HttpPool:
    """This thread's connections to one backend (HttpPool)."""
    held = getattr(_pools, "by_url", None)
    if held is None or _pools.pid != os.getpid():
        held = _pools.by_url = {}
        _pools.pid = os.getpid()
    pool = held.get(base_url)
    if pool is None:
        pool = held[base_url] = HttpPool(base_url)
    return pool


# What a call raises when the backend could not be reached or stopped answering: urllib3's
# timeouts (connect, read; a refused or unresolved connection is a NewConnectionError, one
# of them), a connection dropped mid-answer, TLS and proxy failures, and the socket's own.
_UNREACHABLE = (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError,
                urllib3.exceptions.ProxyError, urllib3.exceptions.NewConnectionError, OSError)


class ComfyClient:
    def __init__(self, base_url: str, *, timeout: float = 10.0, http: HttpPool | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = http or shared_pool(self.base_url)

    # -- plumbing ---------------------------------------------------------------------

    def _request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> _Answer:
        url = self.base_url + path
        try:
            resp = self.http.request(method, url, timeout=self.timeout, preload_content=not stream, **kwargs)
        except _UNREACHABLE as exc:
            raise ComfyUnreachable(f"{method} {url}: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ComfyProtocolError(f"{method} {url}: {exc}") from exc
        answer = _Answer(method, url, resp)
        if resp.status in _GATEWAY_STATUSES:
            answer.close()
            raise ComfyUnreachable(f"{method} {url}: HTTP {resp.status}")
        return answer

    def _check(self, resp: _Answer) -> None:
        if 200 <= resp.status < 300:
            return
        body = resp.text
        resp.close()
        cls = ComfyNotFound if resp.status == 404 else ComfyProtocolError
        raise cls(f"{resp.method} {resp.url}: HTTP {resp.status}: {body[:200]!r}", status=resp.status, body=body)

    @staticmethod
    def _json(resp: _Answer) -> Any:
        try:
            return json.loads(resp.body)
        except ValueError as exc:
            raise ComfyProtocolError(
                f"{resp.method} {resp.url}: body is not JSON: {resp.text[:200]!r}",
                status=resp.status,
                body=resp.text,
            ) from exc

    def _get_json(self, path: str, expect: type = dict, **kwargs: Any) -> Any:
        resp = self._request("GET", path, **kwargs)
        self._check(resp)
        data = self._json(resp)
        if not isinstance(data, expect):
            raise ComfyProtocolError(f"GET {path}: expected {expect.__name__}, got {type(data).__name__}", body=data)
        return data

    def _post_empty(self, path: str, payload: dict) -> None:
        # /queue and /interrupt always answer an empty 200 that says nothing about whether
        # the id was found, so there is nothing to return.
        resp = self._request("POST", path, json=payload)
        self._check(resp)
        resp.close()

    # -- read-only endpoints ----------------------------------------------------------

    def system_stats(self) -> dict:
        return self._get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict:
        # An unknown class answers 200 {} rather than 404; callers check for the key.
        path = "/object_info" if node_class is None else "/object_info/" + quote(node_class, safe="")
        return self._get_json(path)

    def checkpoints(self) -> list[str]:
        info = self.object_info("CheckpointLoaderSimple").get("CheckpointLoaderSimple")
        try:
            spec = info["input"]["required"]["ckpt_name"]
        except (KeyError, TypeError) as exc:
            raise ComfyProtocolError("CheckpointLoaderSimple has no ckpt_name input", body=info) from exc
        return combo_options(spec)

    def history(self, prompt_id: str) -> dict | None:
        # Pending, running and unknown ids all answer 200 {}; the entry only appears once
        # the prompt has finished (success, error or interrupt alike).
        data = self._get_json("/history/" + quote(prompt_id, safe=""))
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def queue(self) -> dict:
        return self._get_json("/queue")

    def queue_state(self, prompt_id: str) -> str | None:
        # Items are [number, prompt_id, prompt, extra_data, outputs_to_execute].
        q = self.queue()
        for state, key in (("running", "queue_running"), ("pending", "queue_pending")):
            for item in q.get(key) or []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return state
        return None

    # -- actions ----------------------------------------------------------------------

    def submit(self, *, prompt: dict, prompt_id: str, client_id: str, extra_data: dict | None = None) -> dict:
        """Queue a graph under our own prompt_id (so websocket frames that beat the HTTP
        answer can already be matched). Returns the 200 body {prompt_id, number, node_errors}.

        A 200 whose node_errors is non-empty is raised as ComfyPromptRejected(status=200):
        ComfyUI accepts a graph as soon as *one* output validates and silently drops the
        invalid branches, so the user would get fewer images than asked for, with no error.
        The pruned prompt is already queued at that point, so we withdraw it on a best-effort
        basis (delete if pending, targeted interrupt if it already started) before raising.
        """
        payload: dict[str, Any] = {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        resp = self._request("POST", "/prompt", json=payload)
        status = resp.status
        if status == 400 or status >= 500:
            # 500 text/plain is ComfyUI crashing on a prompt that is not a dict (UI-format
            # workflow, string, ...): deterministic, so a rejection rather than transient.
            raise ComfyPromptRejected(status, _body_of(resp))
        self._check(resp)
        body = self._json(resp)
        if not isinstance(body, dict):
            raise ComfyProtocolError("POST /prompt: 200 body is not an object", status=status, body=body)
        if body.get("node_errors"):
            try:
                self.abandon(str(body.get("prompt_id") or prompt_id))
            except ComfyError:
                pass  # must not hide the rejection we are about to raise
            raise ComfyPromptRejected(status, body)
        return body

    def abandon(self, prompt_id: str) -> None:
        """Take one prompt off this server, whatever it is doing: out of the queue if it
        waits there, else interrupted if it runs (only it, never what else runs).

        Both calls are silent no-ops when they do not apply (a running prompt cannot be
        deleted; a targeted interrupt skips a prompt that is not running), so they are
        sent in that order without asking first: a prompt that starts between the two
        is still caught by the interrupt.
        """
        self.delete_from_queue([prompt_id])
        self.interrupt(prompt_id)

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts. A running prompt cannot be deleted (use interrupt), and
        deleted prompts get no websocket message: waiters must poll."""
        if prompt_ids:
            self._post_empty("/queue", {"delete": list(prompt_ids)})

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt prompt_id if it is the one running; a silent no-op otherwise.

        Never global: a body without prompt_id would stop whatever runs, possibly
        another user's job. Takes effect only at the next sampler step or node boundary.
        """
        if not prompt_id:
            raise ValueError("interrupt() needs a prompt_id; global interrupts are not allowed")
        self._post_empty("/interrupt", {"prompt_id": prompt_id})

    def download(self, image: dict, fileobj: IO[bytes]) -> int:
        params = {
            "filename": image["filename"],
            "subfolder": image.get("subfolder") or "",
            "type": image.get("type") or "output",
        }
        resp = self._request("GET", "/view", fields=params, stream=True)
        self._check(resp)
        written = 0
        try:
            for chunk in resp.raw.stream(_CHUNK):
                if chunk:
                    fileobj.write(chunk)
                    written += len(chunk)
        except _UNREACHABLE as exc:
            raise ComfyUnreachable(f"GET /view: download interrupted: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ComfyProtocolError(f"GET /view: {exc}") from exc
        finally:
            resp.close()
        return written

    def upload_image(self, *, name: str, fileobj: IO[bytes], subfolder: str = "", overwrite: bool = False) -> dict:
        """POST /upload/image. Use the returned `name` (the server may rename on clashes)."""
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        data = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        resp = self._request("POST", "/upload/image", fields={**data, "image": (name, fileobj.read(), content_type)})
        self._check(resp)
        body = self._json(resp)
        if not isinstance(body, dict) or "name" not in body:
            raise ComfyProtocolError("POST /upload/image: unexpected body", status=resp.status, body=body)
        return body

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/") + "/ws"
        return urlunsplit((scheme, parts.netloc, path, "clientId=" + quote(client_id, safe=""), ""))

    def open_socket(self, client_id: str, *, timeout: float = 10.0, preview_metadata: bool = True) -> ComfySocket:
        return ComfySocket.connect(self.ws_url(client_id), timeout=timeout, preview_metadata=preview_metadata)


class ComfySocket:
    """One /ws connection.

    Reconnecting with the same clientId: close this socket *first* and let the close
    finish, otherwise the server's cleanup of the old socket unregisters the new one
    and it goes silent (docs/comfyui.md, "Reconnecting with the same clientId").
    """

    def __init__(self, ws: websocket.WebSocket):
        self._ws = ws

    @classmethod
    def connect(cls, url: str, *, timeout: float = 10.0, preview_metadata: bool = True) -> ComfySocket:
        try:
            # Text frames are decoded (and so checked) as UTF-8 by recv; websocket-client's own
            # check is pure Python, a per-byte loop that cost a pump 13 % of its CPU.
            ws = websocket.create_connection(url, timeout=timeout, enable_multithread=True,
                                             skip_utf8_validation=True)
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUnreachable(f"websocket {url}: {exc}") from exc
        sock = cls(ws)
        if preview_metadata:
            # Must be the first client frame. It makes previews arrive as type 4, which
            # carry their prompt_id, instead of anonymous type-1 frames. Servers that do
            # not know the flag ignore it.
            try:
                ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            except (websocket.WebSocketException, OSError) as exc:
                sock.close()
                raise ComfyUnreachable(f"websocket {url}: {exc}") from exc
        return sock

    def recv(self, timeout: float) -> Event | Preview | TextFrame | None:
        """Next frame, or None if nothing (usable) arrived within `timeout` seconds."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._ws.settimeout(remaining)
            try:
                opcode, payload = self._ws.recv_data()
            except (websocket.WebSocketTimeoutException, socket.timeout, TimeoutError):
                return None
            except (websocket.WebSocketConnectionClosedException, OSError) as exc:
                raise ComfySocketClosed(f"websocket closed: {exc}") from exc
            except websocket.WebSocketException as exc:
                raise ComfySocketClosed(f"websocket failed: {exc}") from exc
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ComfySocketClosed("websocket closed by server")
            try:
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    return parse_text(payload.decode("utf-8") if isinstance(payload, bytes) else payload)
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    item = parse_binary(payload)
                    if item is not None:
                        return item
                    # Unknown binary event type from a newer server: skip it, keep waiting.
            except ValueError as exc:
                raise ComfyProtocolError(f"bad websocket frame: {exc}") from exc

    def close(self) -> None:
        try:
            self._ws.close(timeout=1)
        except (websocket.WebSocketException, OSError):
            pass

    def __enter__(self) -> ComfySocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def combo_options(spec: Any) -> list[str]:
    """Choices of a COMBO input spec, in either object_info shape:
    legacy ``[[choices...], {...}]`` or newer ``["COMBO", {"options": [...]}]``."""
    if isinstance(spec, list) and spec:
        head = spec[0]
        if isinstance(head, list):
            return [str(x) for x in head]
        if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return [str(x) for x in spec[1].get("options") or []]
    raise ComfyProtocolError(f"not a COMBO input spec: {str(spec)[:200]}", body=spec)


class _Answer:
    """One answer of a backend, with the request it answers (for messages)."""

    def __init__(self, method: str, url: str, raw: urllib3.BaseHTTPResponse):
        self.method, self.url, self.raw = method, url, raw
        self.status = raw.status
        self.headers = raw.headers

    @property
    def body(self) -> bytes:
        return self.raw.data

    @property
    def text(self) -> str:
        return self.raw.data.decode("utf-8", "replace")

    def close(self) -> None:
        if not self.raw.closed:
            # Not read to its end (a stream cut short): its connection cannot carry another call.
            self.raw.close()
        self.raw.release_conn()


def _body_of(resp: _Answer) -> dict | str:
    text = resp.text
    resp.close()
    if "json" in resp.headers.get("Content-Type", ""):
        try:
            data = json.loads(text)
        except ValueError:
            return text
        return data if isinstance(data, dict) else text
    return text
