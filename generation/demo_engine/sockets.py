"""WebSocket registry and delivery, following ComfyUI's ``server.sockets`` rules.

- One registered socket per client id receives that client's messages; ``sid=None`` means broadcast to all.
- A new socket with an id already connected replaces the old one, which then gets nothing (as in ComfyUI).
  Simplification: when the replaced socket closes, the newer registration is kept ("newest socket wins"), where
  real ComfyUI would drop it too.
- Preview frames are type 4 for sockets that negotiated ``supports_preview_metadata``, type 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import frames

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Client:
    """One open socket and what it negotiated."""

    sid: str
    ws: web.WebSocketResponse
    feature_flags: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_metadata(self) -> bool:
        return bool(self.feature_flags.get("supports_preview_metadata"))


class SocketHub:
    def __init__(self) -> None:
        self.active: dict[str, Client] = {}  # sid → the socket that receives messages
        self.open: dict[str, list[Client]] = {}  # sid → every socket still open (for drop_socket faults)
        self._closing: set[asyncio.Task[Any]] = set()

    def register(self, client: Client) -> None:
        self.active[client.sid] = client  # replaces (silences) an older socket with the same id
        self.open.setdefault(client.sid, []).append(client)

    def unregister(self, client: Client) -> None:
        sockets = self.open.get(client.sid, [])
        if client in sockets:
            sockets.remove(client)
        if not sockets:
            self.open.pop(client.sid, None)
        if self.active.get(client.sid) is client:
            self.active.pop(client.sid)

    def targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return list(self.active.values())
        client = self.active.get(sid)
        return [client] if client is not None else []

    async def _send_str(self, client: Client, text: str) -> None:
        try:
            await client.ws.send_str(text)
        except (ConnectionError, RuntimeError) as ex:  # closing/closed socket: dropped, like ComfyUI
            log.debug("dropping message for %s: %s", client.sid, ex)

    async def _send_bytes(self, client: Client, data: bytes) -> None:
        try:
            await client.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as ex:
            log.debug("dropping frame for %s: %s", client.sid, ex)

    async def send_to(self, client: Client, event: str, data: dict[str, Any]) -> None:
        await self._send_str(client, json.dumps({"type": event, "data": data}))

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """A text message to ``sid`` (or everyone when ``sid`` is None)."""
        text = json.dumps({"type": event, "data": data})
        for client in self.targets(sid):
            await self._send_str(client, text)

    async def send_step(self, sid: str | None, progress: dict[str, Any], jpeg: bytes,
                        metadata: dict[str, Any]) -> None:
        """The ``progress`` message and its preview, in the order ComfyUI produces per socket kind.

        Legacy sockets get ``progress`` then a type-1 frame; metadata sockets get the type-4 frame first (it is
        sent by the progress handler before the legacy ``progress`` hook runs).
        """
        text = json.dumps({"type": "progress", "data": progress})
        for client in self.targets(sid):
            if client.wants_metadata and sid is not None:
                await self._send_bytes(client, frames.preview_image_with_metadata(jpeg, metadata))
                await self._send_str(client, text)
            else:
                await self._send_str(client, text)
                await self._send_bytes(client, frames.preview_image(jpeg))

    def close_client(self, sid: str) -> int:
        """Close every open socket of ``sid`` (the drop_socket fault); returns how many are being closed.

        The closing handshake runs in background tasks: ``ws.close()`` waits for the peer's answer, and the
        executor must not stall on a client that is not reading.
        """
        sockets = list(self.open.get(sid, []))
        for client in sockets:
            self.unregister(client)  # nothing more is delivered to it, even before the handshake finishes
            task = asyncio.create_task(client.ws.close(code=1011, message=b"demo engine: injected socket drop"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(sockets)
