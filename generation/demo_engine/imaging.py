"""Pillow versions of the tensor operations behind ComfyUI's scaling and mask nodes.

The demo engine has no torch (and no numpy), but the sizes, crops and mask shapes a client sees must be the ones
a real ComfyUI 0.3.64 produces, so each helper names the ComfyUI code it follows. Masks are mode ``"L"`` pictures
where 255 stands for ComfyUI's 1.0 ("change this pixel") and 0 for 0.0.
"""

from __future__ import annotations

import math

from PIL import Image, ImageChops, ImageOps

#: ComfyUI's ``upscale_method`` names → Pillow filters. ``bislerp`` (spherical interpolation of latents) has no
#: pixel-space equivalent; bilinear is the closest.
RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "bislerp": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}

#: The VAEs of SD-family checkpoints work on 8x8 pixel blocks: a latent is 1/8 of the picture's size.
LATENT_SCALE = 8


def common_upscale(picture: Image.Image, width: int, height: int, method: str, crop: str) -> Image.Image:
    """``comfy.utils.common_upscale``: with ``crop == "center"`` first cut the picture to the new aspect ratio
    (centred), then resize to exactly ``width`` x ``height``."""
    if crop == "center":
        old_width, old_height = picture.size
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        picture = picture.crop((x, y, old_width - x, old_height - y))
    return picture.resize((width, height), RESAMPLE.get(method, Image.Resampling.BILINEAR))


def tiled_scale_steps(width: int, height: int, tile: int = 512, overlap: int = 32) -> int:
    """``comfy.utils.get_tiled_scale_steps``: how many tiles (progress steps) ImageUpscaleWithModel reports for one
    picture (it runs the model on 512 px tiles overlapping by 32 px)."""
    rows = 1 if height <= tile else math.ceil((height - overlap) / (tile - overlap))
    cols = 1 if width <= tile else math.ceil((width - overlap) / (tile - overlap))
    return rows * cols


def binary(mask: Image.Image) -> Image.Image:
    """``mask.round()``: 1 where the mask is at least one half (128/255 rounds up, 127/255 down)."""
    return mask.point(lambda value: 255 if value >= 128 else 0)


def grow_box(mask: Image.Image, size: int) -> Image.Image:
    """VAEEncodeForInpaint's ``grow_mask_by``: ``clamp(conv2d(mask, ones(size, size), padding=ceil((size-1)/2)))``
    cut to the picture's size, i.e. a binary dilation whose window for pixel ``i`` spans ``i - p … i - p + size - 1``
    (one pixel lopsided for even sizes). Done as two passes of shifted maxima, since a box is separable."""
    if size <= 0:
        return mask
    width, height = mask.size
    pad = math.ceil((size - 1) / 2)
    padded = ImageOps.expand(mask, border=size, fill=0)  # conv2d pads with zeros
    rows: Image.Image | None = None
    for k in range(size):
        offset = size - pad + k
        piece = padded.crop((offset, 0, offset + width, height + 2 * size))
        rows = piece if rows is None else ImageChops.lighter(rows, piece)
    assert rows is not None
    out: Image.Image | None = None
    for k in range(size):
        offset = size - pad + k
        piece = rows.crop((0, offset, width, offset + height))
        out = piece if out is None else ImageChops.lighter(out, piece)
    assert out is not None
    return out


def grow_mask(mask: Image.Image, expand: int, tapered_corners: bool) -> Image.Image:
    """GrowMask: ``abs(expand)`` rounds of ``scipy.ndimage.grey_dilation`` (``grey_erosion`` when negative) with a
    3x3 footprint, a plus sign when ``tapered_corners``.

    scipy reflects at the border; for a 3x3 footprint the reflected neighbour of an edge pixel is that pixel or
    another footprint member, so padding with the neutral value (0 to dilate, 255 to erode) gives the same result.
    Once a round changes nothing, later rounds cannot either, so the loop stops there (``expand`` may be 16384).
    """
    erode = expand < 0
    combine = ImageChops.darker if erode else ImageChops.lighter
    offsets = [(1, 1), (0, 1), (2, 1), (1, 0), (1, 2)]
    if not tapered_corners:
        offsets += [(0, 0), (2, 0), (0, 2), (2, 2)]
    width, height = mask.size
    out = mask
    for _ in range(abs(expand)):
        padded = ImageOps.expand(out, border=1, fill=255 if erode else 0)
        grown = out
        for dx, dy in offsets:
            grown = combine(grown, padded.crop((dx, dy, dx + width, dy + height)))
        if ImageChops.difference(grown, out).getbbox() is None:
            break
        out = grown
    return out
