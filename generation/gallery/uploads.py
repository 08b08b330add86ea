"""Writes on source images: the pictures img2img starts from.

Everything that enters is decoded and re-encoded here, so what is stored (and later
sent to ComfyUI) is a plain picture: no metadata (EXIF with GPS, a PNG's embedded
prompt), no trailing bytes, no polyglot file, orientation already applied.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from PIL import Image, ImageOps, UnidentifiedImageError

from config.uploads import max_upload_bytes, upload_too_large_message

from ..media_types import extension_for
from ..models import GeneratedImage, SourceImage, TaskStatus

logger = logging.getLogger(__name__)

# Codes on the ValidationError that the API turns into their own HTTP statuses
# (413, 415); every other failure is a plain 400.
CODE_TOO_LARGE = "too_large"
CODE_UNSUPPORTED = "unsupported_media_type"

DEFAULT_MAX_UPLOAD_PIXELS = 4096 * 4096

# Only these decoders ever see an uploaded byte: fewer parsers, less attack surface.
_FORMATS = ("PNG", "JPEG", "WEBP")
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
_EXTENSIONS = {
    "png": "PNG",
    "jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "jfif": "JPEG",
    "webp": "WEBP",
}
_HIGH_BIT_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def max_upload_pixels() -> int:
    return getattr(settings, "EASEL_MAX_UPLOAD_PIXELS", DEFAULT_MAX_UPLOAD_PIXELS)


def _invalid(message: str, code: str = "invalid") -> ValidationError:
    return ValidationError({"image": [ValidationError(message, code=code)]})


def _too_many_pixels() -> ValidationError:
    return _invalid(
        _("The picture is too large: at most %(pixels)s pixels (for example %(side)d × %(side)d).")
        % {"pixels": f"{max_upload_pixels():,}", "side": int(max_upload_pixels() ** 0.5)},
        code="too_many_pixels",
    )


def upload_read(file) -> bytes:
    """The upload's bytes, refusing (without reading it all) anything over the limit."""
    limit = max_upload_bytes()
    too_large = _invalid(upload_too_large_message(), code=CODE_TOO_LARGE)
    size = getattr(file, "size", None)
    if size is not None and size > limit:
        raise too_large
    if hasattr(file, "seek"):
        file.seek(0)
    # One byte more than allowed is enough to know, whatever `size` claimed.
    data = file.read(limit + 1)
    if len(data) > limit:
        raise too_large
    if not data:
        raise _invalid(_("The file is empty."), code="empty")
    return data


def _clean_name(name: str) -> str:
    # Browsers on Windows may send a full path; only the last part is the name.
    return os.path.basename(name.replace("\\", "/")).strip()[:255]


def _decode(data: bytes, *, name: str) -> tuple[Image.Image, str]:
    """Open, check and fully decode the picture; returns the image and its detected format."""
    limit = max_upload_pixels()
    try:
        # Pillow's own bomb guard warns (or raises past twice its limit) while opening;
        # as an error, either becomes the same clean refusal. (catch_warnings touches
        # process-wide state, but only for the few lines of this block; Easel's own pixel
        # limit, far below Pillow's, decides in practice.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_FORMATS)
            detected = image.format
            # The header is read, the pixels are not: refuse a bomb before decoding it.
            if image.width * image.height > limit:
                raise _too_many_pixels()
            if image.width < 1 or image.height < 1:
                raise _invalid(_("The picture has no pixels."))

            extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            # No extension (a script posting "blob") is fine; a misleading one is not.
            if extension and _EXTENSIONS.get(extension) != detected:
                raise _invalid(
                    _("The file name says %(named)s but the file is a %(actual)s.")
                    % {
                        "named": _FORMAT_NAMES.get(_EXTENSIONS.get(extension, ""), extension.upper()),
                        "actual": _FORMAT_NAMES[detected],
                    },
                    code="extension_mismatch",
                )
            # Animated PNG/WebP: the first frame is the picture (Image.open is already there).
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels() from exc
    except UnidentifiedImageError as exc:
        raise _invalid(_("This is not a supported picture: upload a PNG, JPEG or WebP image."),
                       code=CODE_UNSUPPORTED) from exc
    except ValidationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        # Truncated or corrupt data (Pillow reports it in several ways).
        raise _invalid(_("The picture is damaged or incomplete and cannot be read."), code="corrupt") from exc
    return image, detected


def _reencode(image: Image.Image, detected: str) -> tuple[bytes, str, int, int]:
    """Clean bytes, content type and size of the picture as Easel stores it."""
    # A phone photo stored sideways with an "Orientation" tag is turned upright, since
    # the tag itself is stripped below and ComfyUI would otherwise see it sideways.
    image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_BIT_MODES:
        # 16-bit grey (some PNGs): scale to 8 bits instead of clipping to white.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if detected == "JPEG":
        image, fmt, content_type, options = image.convert("RGB"), "JPEG", "image/jpeg", {"quality": 95}
    else:
        # PNG stays PNG; WebP is stored as PNG too (lossless, and every ComfyUI reads it).
        image = image.convert("RGBA" if has_alpha else "RGB")
        fmt, content_type, options = "PNG", "image/png", {}
    # Nothing of the original's metadata travels (EXIF, XMP, text chunks, ICC profile):
    # `convert` copies `info`, and some encoders write what they find there.
    image.info = {}
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue(), content_type, image.width, image.height


def _store(*, user, data: bytes, content_type: str, width: int, height: int, name: str) -> SourceImage:
    digest = hashlib.sha256(data).hexdigest()
    existing = SourceImage.objects.filter(user=user, sha256=digest).first()
    if existing is not None:
        return existing
    source = SourceImage(
        user=user, original_name=name, content_type=content_type, width=width, height=height,
        size_bytes=len(data), sha256=digest,
    )
    # The storage path comes from the hash (see the model's upload_to); the name is ignored.
    source.file.save(f"{digest}.{source.extension}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            source.save()
    except IntegrityError:
        # The same picture uploaded twice at once: the other request stored it first.
        # Our copy got another file name from the storage, so removing it is safe.
        source.file.storage.delete(source.file.name)
        return SourceImage.objects.get(user=user, sha256=digest)
    return source


def _clean_and_store(*, user, data: bytes, name: str) -> SourceImage:
    """Decode and check the picture, re-encode it clean, and store it (deduplicated)."""
    image, detected = _decode(data, name=name)
    try:
        clean, content_type, width, height = _reencode(image, detected)
    finally:
        image.close()
    return _store(user=user, data=clean, content_type=content_type, width=width, height=height, name=name)


def source_image_create(*, user, file, name: str = "") -> SourceImage:
    """Validate an uploaded picture, store a clean re-encoding of it, and return its row.

    Accepts PNG, JPEG and WebP judged by their content. Uploading the same picture
    again returns the row already stored. Raises ValidationError on the "image" field;
    the error's code is CODE_TOO_LARGE or CODE_UNSUPPORTED when the API should answer
    413 or 415.
    """
    name = _clean_name(name or getattr(file, "name", "") or "")
    return _clean_and_store(user=user, data=upload_read(file), name=name)


def upload_decode(*, file, name: str = "") -> Image.Image:
    """An upload's picture, read and checked as `source_image_create` does, but not stored:
    for a door that changes it first (the OpenAI-compatible edits scale a picture to the
    size asked for and turn a mask's transparency into Easel's white-means-redraw).
    Raises the same ValidationError (on "image"); the caller closes the image."""
    name = _clean_name(name or getattr(file, "name", "") or "")
    return _decode(upload_read(file), name=name)[0]


def source_image_store(*, user, image: Image.Image, name: str = "") -> SourceImage:
    """Store a picture made in memory (from `upload_decode`) as a source image, as PNG
    (deduplicated like an upload)."""
    clean, content_type, width, height = _reencode(image, "PNG")
    return _store(user=user, data=clean, content_type=content_type, width=width, height=height,
                  name=_clean_name(name))


def source_image_from_result(*, user, image: GeneratedImage) -> SourceImage:
    """Use one of the user's own finished results as a source image."""
    task = image.task
    if task.user_id != user.pk:
        raise PermissionDenied
    if task.status != TaskStatus.COMPLETED:
        raise _invalid(_("Only a finished result can be used as a source image."))
    try:
        with image.file.storage.open(image.file.name, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError) as exc:
        raise _invalid(_("The stored picture of this result is missing.")) from exc
    extension = extension_for(image.content_type, default="")
    name = f"easel-{task.pk}-{image.index}.{extension}" if extension else f"easel-{task.pk}-{image.index}"
    # Our own output, but it goes through the same checks: a backend is not trusted more
    # than a user, and the re-encoding makes the hash (and so the dedupe) consistent.
    # The byte limit is for uploads only; the pixel limit still applies.
    return _clean_and_store(user=user, data=data, name=name)


def source_image_delete(*, source: SourceImage) -> None:
    """Delete a source image and its file. Tasks that used it keep their history (SET_NULL)."""
    storage, file_name = source.file.storage, source.file.name
    source.delete()

    def remove_file() -> None:
        # After commit: a rolled-back delete must not leave a row without its file.
        try:
            storage.delete(file_name)
        except OSError:
            logger.warning("could not remove source image file %s", file_name, exc_info=True)

    if file_name:
        transaction.on_commit(remove_file)
