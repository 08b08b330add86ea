"""Removing what a picture file says about how it was made, for pictures shown to strangers.

ComfyUI writes the whole workflow into the PNGs it saves (text chunks `prompt` and
`workflow`: the negative prompt, the seed, the checkpoint's file name, the template's
graph). An owner downloading their own picture keeps all that; a public share link must
not hand it to anyone who has the link. The chunks are filtered without decoding the
picture, so its pixels stay exactly as they were.
"""
from __future__ import annotations

import io
import struct

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text, EXIF and time chunks carry metadata; everything else draws the picture.
PNG_DROPPED = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}
# JPEG: APP1 (EXIF, XMP), APP13 (Photoshop, IPTC) and comments. APP0 (JFIF), APP2 (the
# colour profile) and APP14 (Adobe's colour transform) are needed to show it right.
JPEG_DROPPED = {0xE1, 0xED, 0xFE}
WEBP_DROPPED = {b"EXIF", b"XMP "}
WEBP_EXIF_FLAG, WEBP_XMP_FLAG = 0x08, 0x04


def strip_metadata(data: bytes, content_type: str) -> tuple[bytes, str]:
    """The same picture without its embedded metadata, and its content type: PNG, JPEG
    and WebP filtered by their chunks; anything else re-encoded as PNG, which carries
    nothing over."""
    try:
        if content_type == "image/png" and data.startswith(PNG_SIGNATURE):
            return _png(data), content_type
        if content_type == "image/jpeg" and data.startswith(b"\xff\xd8"):
            return _jpeg(data), content_type
        if content_type == "image/webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data), content_type
    except (IndexError, struct.error, ValueError):
        pass  # a damaged file: re-encoded below
    return _reencode(data), "image/png"


def _png(data: bytes) -> bytes:
    out = [PNG_SIGNATURE]
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind not in PNG_DROPPED:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def _jpeg(data: bytes) -> bytes:
    out = [data[:2]]
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = data[pos + 1]
        if marker == 0xDA or marker == 0xD9:  # start of scan: the rest is the picture itself
            out.append(data[pos:])
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            out.append(data[pos:pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if marker not in JPEG_DROPPED:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _webp(data: bytes) -> bytes:
    chunks = []
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos:pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4:pos + 8])
        end = pos + 8 + size + (size & 1)  # chunks are padded to an even length
        chunk = data[pos:end]
        if kind == b"VP8X":  # the extended header says which chunks follow: not those any more
            flags = chunk[8] & ~(WEBP_EXIF_FLAG | WEBP_XMP_FLAG)
            chunk = chunk[:8] + bytes([flags]) + chunk[9:]
        if kind not in WEBP_DROPPED:
            chunks.append(chunk)
        pos = end
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _reencode(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as picture:
        picture.load()
        clean = picture.copy()
    clean.info = {}
    out = io.BytesIO()
    clean.save(out, "PNG")
    return out.getvalue()
