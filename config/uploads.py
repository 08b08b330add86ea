"""Multipart uploads refused by size while they stream.

Django writes an upload to memory or to a temporary file as it reads it, and only then
does a view see how big it was: a 300 MB "picture" would land in /tmp before being
refused. `UploadLimitHandler` sits first among the upload handlers and stops reading
the body once the files in it pass EASEL_MAX_UPLOAD_BYTES; the fields read until then
stay, the part of the file already received is dropped with its temporary file. The
API answers 413 (`config.parsers.MultiPartParser` raises `UploadTooLarge`), the pages
show `upload_too_large_message()` beside the file field (`upload_refused`).
"""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

# Room for the form fields and the multipart framing around a file at the limit, when
# the API refuses a body from its declared length alone (config.middleware).
MULTIPART_ALLOWANCE = 64 * 1024


def max_upload_bytes() -> int:
    return settings.EASEL_MAX_UPLOAD_BYTES


def upload_too_large_message() -> str:
    return _("The file is too large: at most %(limit)s.") % {"limit": filesizeformat(max_upload_bytes())}


class UploadLimitHandler(FileUploadHandler):
    """Counts the bytes of every file in one request and stops the parser past the limit."""

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0
        self.refused_field: str | None = None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > max_upload_bytes():
            self.refused_field = self.field_name
            # Nothing more is read from the client; the handlers after this one never
            # see this chunk, so no temporary file grows past the limit.
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int):
        return None  # the next handler (memory or temporary file) makes the file


class UploadTooLarge(Exception):
    """A file refused while it streamed; the API answers 413 naming its field."""

    def __init__(self, *, field: str):
        self.field = field
        self.message = upload_too_large_message()
        super().__init__(self.message)


def upload_refused(request) -> str | None:
    """The field whose file was refused as too large while the body streamed, if any."""
    for handler in request.upload_handlers:
        if isinstance(handler, UploadLimitHandler) and handler.refused_field:
            return handler.refused_field
    return None
