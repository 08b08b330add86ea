"""``GET /view`` and ``POST /upload/image``, with ComfyUI's status codes and path checks.

/view: 400 for ``..``/absolute names or an unknown ``type``, 403 for a subfolder escaping its base, 404 for a
missing file or no ``filename``. Upload: same name with the same bytes keeps the name, different bytes get
``name (1).png`` unless ``overwrite`` is ``true``/``1``; no ``image`` part → 400 with an empty body.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
from pathlib import Path

from aiohttp import web
from PIL import Image

from . import files
from .options import EngineOptions

#: Served as downloads rather than rendered, like ComfyUI does for safety.
FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


async def view_file(options: EngineOptions, request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    filename, base = files.annotated_filepath(options, query["filename"])
    if not filename:
        return web.Response(status=400)
    if filename[0] == "/" or ".." in filename:
        return web.Response(status=400)
    if base is None:
        base = files.directory_for_type(options, query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
    folder = base
    if "subfolder" in query:
        folder = base / query["subfolder"]
        if not files.is_within(base, folder):
            return web.Response(status=403)
    filename = os.path.basename(filename)
    path = Path(os.path.abspath(folder)) / filename
    if not path.is_file():
        return web.Response(status=404)
    disposition = {"Content-Disposition": f'filename="{filename}"'}

    if "preview" in query:
        preview = query["preview"].split(";")
        fmt = preview[0] if preview[0] in ("webp", "jpeg") and "a" not in query.get("channel", "") else "webp"
        quality = int(preview[-1]) if preview[-1].isdigit() else 90
        with Image.open(path) as img:
            buffer = io.BytesIO()
            img.convert("RGB").save(buffer, format=fmt, quality=quality)
        return web.Response(body=buffer.getvalue(), content_type=f"image/{fmt}", headers=disposition)

    channel = query.get("channel", "rgba")
    if channel in ("rgb", "a"):
        with Image.open(path) as img:
            if channel == "rgb":
                out = img.convert("RGB")
            else:
                alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
                out = Image.new("RGBA", img.size, (0, 0, 0, 0))
                out.putalpha(alpha)
            buffer = io.BytesIO()
            out.save(buffer, format="PNG")
        return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)

    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type in FORCE_DOWNLOAD:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})


async def upload_image(options: EngineOptions, request: web.Request) -> web.Response:
    post = await request.post()
    image = post.get("image")
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    kind = str(post.get("type") or "input")
    base = files.directory_for_type(options, kind)
    if base is None:
        return web.Response(status=400)
    subfolder = str(post.get("subfolder", ""))
    folder = Path(os.path.join(base, os.path.normpath(subfolder)))
    filename = image.filename
    path = Path(os.path.abspath(folder / filename))
    if not files.is_within(base, path):
        return web.Response(status=400)
    folder.mkdir(parents=True, exist_ok=True)
    data = image.file.read()

    overwrite = str(post.get("overwrite", "")) in ("true", "1")
    duplicate = False
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        counter = 1
        digest = hashlib.sha256(data).hexdigest()
        while path.exists():
            if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                duplicate = True  # same name, same bytes: keep the existing file and name
                break
            filename = f"{stem} ({counter}){ext}"
            path = folder / filename
            counter += 1
    if not duplicate:
        path.write_bytes(data)
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})
