"""Decoding of ComfyUI websocket frames (ComfyUI 0.3.64 wire format).

Text frames are always ``{"type": T, "data": {...}}``. Binary frames start with a
4-byte big-endian event type, and the rest of the layout depends on that type, so
we switch on it *before* reading anything else: treating byte 4 as the image
format for every frame misparses type-4 (preview with metadata) and type-3 (text)
frames. See docs/comfyui.md, "Binary frames".

Parsing errors are raised as plain ``ValueError`` so this module stays free of any
dependency; the socket wrapper in client.py turns them into ComfyProtocolError.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

# server.py BinaryEventTypes. 2 (UNENCODED_PREVIEW_IMAGE) never reaches the wire.
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

# send_image() writes this int after the event type for type-1 frames only.
_TYPE1_FORMATS = {1: "jpeg", 2: "png"}
# Type-4 frames name the image by MIME type in their metadata; normalised so callers
# see the same "jpeg"/"png" values whichever preview layout the server chose.
_MIME_FORMATS = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True)
class Event:
    """One JSON text frame."""

    type: str
    data: dict

    @property
    def prompt_id(self) -> str | None:
        # `status` and the reconnect-time `executing` frame carry no prompt id.
        pid = self.data.get("prompt_id")
        return pid if isinstance(pid, str) and pid else None


@dataclass(frozen=True)
class Preview:
    """A live preview image (binary event type 1 or 4)."""

    image: bytes
    image_format: str  # "jpeg" / "png", or the raw MIME type / "unknown:<n>" if unrecognised
    metadata: dict | None = None  # only type 4 has it: node_id, prompt_id, display_node_id, image_type...

    @property
    def prompt_id(self) -> str | None:
        # Type-1 previews carry no prompt id at all; the tracker attributes them by timing.
        if not self.metadata:
            return None
        return self.metadata.get("prompt_id") or None

    @property
    def node_id(self) -> str | None:
        return (self.metadata or {}).get("node_id") or None

    @property
    def mime_type(self) -> str:
        return {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(
            self.image_format, "application/octet-stream"
        )


@dataclass(frozen=True)
class TextFrame:
    """Binary event type 3: progress text from a node (e.g. GetImageSize).

    Always broadcast to every socket and carries no prompt id.
    """

    node_id: str
    text: str


def parse_text(frame: str | bytes) -> Event:
    """Decode a text frame; raises ValueError if it is not ``{"type": str, ...}``."""
    try:
        obj: Any = json.loads(frame)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"text frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValueError("text frame has no 'type'")
    data = obj.get("data")
    return Event(type=obj["type"], data=data if isinstance(data, dict) else {})


def parse_binary(frame: bytes) -> Preview | TextFrame | None:
    """Decode a binary frame. Unknown event types give None (newer servers may add some).

    Raises ValueError for a known type whose frame is truncated or inconsistent.
    """
    frame = bytes(frame)
    if len(frame) < 4:
        return None
    (event_type,) = struct.unpack_from(">I", frame, 0)
    if event_type == PREVIEW_IMAGE:
        _need(frame, 8, "type-1 preview")
        (fmt,) = struct.unpack_from(">I", frame, 4)
        return Preview(image=frame[8:], image_format=_TYPE1_FORMATS.get(fmt, f"unknown:{fmt}"))
    if event_type == PREVIEW_IMAGE_WITH_METADATA:
        _need(frame, 8, "type-4 preview")
        (meta_len,) = struct.unpack_from(">I", frame, 4)
        _need(frame, 8 + meta_len, "type-4 preview metadata")
        try:
            metadata = json.loads(frame[8 : 8 + meta_len].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"type-4 preview metadata is not JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ValueError("type-4 preview metadata is not an object")
        mime = str(metadata.get("image_type") or "")
        return Preview(
            image=frame[8 + meta_len :],
            image_format=_MIME_FORMATS.get(mime, mime or "unknown"),
            metadata=metadata,
        )
    if event_type == TEXT:
        _need(frame, 8, "type-3 text")
        (id_len,) = struct.unpack_from(">I", frame, 4)
        _need(frame, 8 + id_len, "type-3 node id")
        node_id = frame[8 : 8 + id_len].decode("utf-8", errors="replace")
        return TextFrame(node_id=node_id, text=frame[8 + id_len :].decode("utf-8", errors="replace"))
    return None


def _need(frame: bytes, size: int, what: str) -> None:
    if len(frame) < size:
        raise ValueError(f"truncated {what} frame ({len(frame)} bytes, need {size})")
