"""Streaming several images as one zip download.

The archive is written by `zipfile` into a small in-memory sink that the response
drains after every chunk, so memory stays flat however many pictures there are and
the download starts at once. Images are already compressed (PNG, JPEG), so they are
stored, not deflated again.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from ..models import GeneratedImage
from .files import image_filename

CHUNK = 64 * 1024


class _Sink:
    """A write-only, unseekable file: zipfile then writes data descriptors (streaming mode)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _stream(images: Iterable[GeneratedImage]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for image in images:
            if not image.file or not image.file.name:
                continue
            try:
                source = image.file.storage.open(image.file.name, "rb")
            except (FileNotFoundError, OSError):
                # A file removed by retention (or by hand) is left out, not a broken download.
                continue
            info = zipfile.ZipInfo(image_filename(image), date_time=image.created_at.timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            with source, archive.open(info, mode="w", force_zip64=True) as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    yield sink.drain()
            yield sink.drain()
    yield sink.drain()


def images_zip_response(*, images: Iterable[GeneratedImage], filename: str) -> StreamingHttpResponse:
    """A download of the given images as `filename` (a zip), streamed."""
    response = StreamingHttpResponse((part for part in _stream(images) if part), content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response
