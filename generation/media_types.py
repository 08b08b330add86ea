"""The picture formats Easel stores, and the one map between content type, file
extension and Pillow's format name (uploads, results, downloads and zips all use it)."""
from __future__ import annotations

# content type → the file extension Easel writes
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def extension_for(content_type: str, default: str = "png") -> str:
    return EXTENSIONS.get(content_type, default)


def content_type_for(pillow_format: str) -> str:
    """Pillow's format name ("PNG", "JPEG", "WEBP") → its content type."""
    return f"image/{(pillow_format or 'png').lower()}"
