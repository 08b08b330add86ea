"""Binary WebSocket frames, byte for byte as ComfyUI 0.3.64 sends them (``server.py`` ``encode_bytes``).

Every frame starts with a 4-byte big-endian event type. The layouts were checked against the captured
``ws_preview_frame_type1.bin`` / ``ws_preview_frame_type4.bin`` / ``ws_text_frame_type3.bin``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2  # internal to ComfyUI, never on the wire
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

#: Image format ids used inside type-1 frames.
FORMAT_JPEG = 1
FORMAT_PNG = 2


def preview_image(image_bytes: bytes, image_format: int = FORMAT_JPEG) -> bytes:
    """Type 1: ``>I 1``, ``>I image_format``, then the encoded image."""
    return struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", image_format) + image_bytes


def preview_image_with_metadata(image_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """Type 4: ``>I 4``, ``>I len(json)``, the metadata JSON, then the image. There is no format int.

    ``json.dumps`` with default separators, as ComfyUI does (the captured metadata is 166 bytes for a uuid id).
    """
    meta = json.dumps(metadata).encode("utf-8")
    return struct.pack(">I", PREVIEW_IMAGE_WITH_METADATA) + struct.pack(">I", len(meta)) + meta + image_bytes


def progress_text(node_id: str, text: str) -> bytes:
    """Type 3: ``>I 3``, ``>I len(node_id)``, node id, then the text (all UTF-8)."""
    node = node_id.encode("utf-8")
    return struct.pack(">I", TEXT) + struct.pack(">I", len(node)) + node + text.encode("utf-8")


def preview_metadata(node_id: str, prompt_id: str, image_type: str = "image/jpeg") -> dict[str, Any]:
    """The metadata dict of a type-4 preview, keys in the captured order."""
    return {
        "node_id": node_id,
        "prompt_id": prompt_id,
        "display_node_id": node_id,
        "parent_node_id": None,
        "real_node_id": node_id,
        "image_type": image_type,
    }


def decode(frame: bytes) -> dict[str, Any]:
    """Parse a binary frame into its parts (used by tests and debugging clients)."""
    (event,) = struct.unpack(">I", frame[:4])
    if event == PREVIEW_IMAGE:
        (fmt,) = struct.unpack(">I", frame[4:8])
        return {"event": event, "image_format": fmt, "image": frame[8:]}
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        return {"event": event, "metadata": json.loads(frame[8 : 8 + length]), "image": frame[8 + length :]}
    if event == TEXT:
        (length,) = struct.unpack(">I", frame[4:8])
        return {"event": event, "node_id": frame[8 : 8 + length].decode(), "text": frame[8 + length :].decode()}
    return {"event": event, "payload": frame[4:]}
