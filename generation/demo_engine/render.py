"""Placeholder pictures for the demo engine.

The demo engine has no model, so it draws an obvious placeholder instead: a seed-coloured gradient with soft
shapes, the word "DEMO", the (truncated) prompt and a footer saying it is not AI output. The footer also carries
notes of what shaped the picture (LoRAs, a latent upscale, a second sampler pass), since a placeholder cannot show
a style. The picture depends only on its inputs (prompt text, seed, size, batch index, optional img2img source and
denoise, notes), so tests and demos are reproducible. Sampler "previews" are progressively sharper versions of the
final picture, mimicking how a real sampler converges.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from typing import Sequence

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

#: ComfyUI upscales/contains every preview to ``--preview-size`` (512 by default); so do we.
PREVIEW_SIZE = 512
#: How much of the prompt is printed on the picture.
PROMPT_CHARS = 80


def _rng(text: str, seed: int, index: int) -> random.Random:
    """A generator seeded from the prompt text, the seed and the batch index (stable across processes)."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{text}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` px (scalable when FreeType is available, bitmap otherwise)."""
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # very old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _gradient(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A vertical two-colour gradient, built from a 1-px column and resized (fast for any size)."""
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        t = y / 255
        column.putpixel((0, y), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return column.resize((width, height), Image.BILINEAR)


def render_background(
    text: str,
    seed: int,
    width: int,
    height: int,
    index: int = 0,
    *,
    source: Image.Image | None = None,
    denoise: float = 1.0,
) -> Image.Image:
    """The placeholder picture without its labels (RGB, ``width`` x ``height``).

    Shapes are placed in proportion to the size, so the same prompt and seed give the same composition at any
    size: a hires fix's second pass lines up with the enlarged first one. ``source`` (img2img) is blended in with
    weight ``1 - denoise``, like a real img2img keeps more of the input at low denoise.
    """
    rng = _rng(text, seed, index)
    top = tuple(rng.randrange(40, 200) for _ in range(3))
    bottom = tuple(rng.randrange(40, 200) for _ in range(3))
    img = _gradient(width, height, top, bottom)  # type: ignore[arg-type]

    # A few translucent blobs so different seeds look clearly different.
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    side = min(width, height)
    for _ in range(6):
        r = max(2.0, rng.uniform(0.1, 1 / 3) * side)
        cx, cy = rng.random() * width, rng.random() * height
        colour = tuple(rng.randrange(256) for _ in range(3)) + (110,)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")

    if source is not None:
        src = ImageOps.fit(source.convert("RGB"), (width, height))
        img = Image.blend(src, img, max(0.0, min(1.0, float(denoise))))
    return img


def label(img: Image.Image, text: str, seed: int, caption: str = "", notes: Sequence[str] = ()) -> Image.Image:
    """A copy of ``img`` with the placeholder's labels: "DEMO", the prompt, the "not AI output" footer, ``caption``
    (e.g. the checkpoint) and ``notes`` (more footer lines, e.g. one per LoRA)."""
    out = img.convert("RGB")
    _draw_labels(out, text, seed, caption, notes)
    return out


def render_picture(
    text: str,
    seed: int,
    width: int,
    height: int,
    index: int = 0,
    *,
    caption: str = "",
    source: Image.Image | None = None,
    denoise: float = 1.0,
    notes: Sequence[str] = (),
) -> Image.Image:
    """Draw the deterministic placeholder picture: :func:`render_background`, then :func:`label`."""
    background = render_background(text, seed, width, height, index, source=source, denoise=denoise)
    return label(background, text, seed, caption, notes)


def _draw_labels(img: Image.Image, text: str, seed: int, caption: str, notes: Sequence[str] = ()) -> None:
    """Print "DEMO", the truncated prompt and a "not AI output" footer onto ``img`` (in place)."""
    width, height = img.size
    draw = ImageDraw.Draw(img)
    big_size = max(8, min(width // 4, height // 3))
    big = _font(big_size)
    small_size = max(6, min(width, height) // 22)
    small = _font(small_size)

    # "DEMO" centred, with a dark outline so it is readable on any background.
    box = draw.textbbox((0, 0), "DEMO", font=big)
    x = (width - (box[2] - box[0])) // 2 - box[0]
    y = (height - (box[3] - box[1])) // 3 - box[1]
    draw.text((x, y), "DEMO", font=big, fill=(255, 255, 255), stroke_width=max(1, big_size // 40),
              stroke_fill=(0, 0, 0))

    prompt = text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "\u2026"
    chars_per_line = max(8, int(width / (small_size * 0.55)))
    lines = textwrap.wrap(prompt, chars_per_line)[:3] or ["(empty prompt)"]
    line_h = small_size + 2
    ty = y + (box[3] - box[1]) + line_h
    for line in lines:
        draw.text((4, ty), line, font=small, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
        ty += line_h

    footer = ["Easel demo engine placeholder", f"not AI output - seed {seed}"]
    if caption:
        footer.append(caption)
    _draw_footer(draw, width, height, [*footer, *notes], small_size)


def _draw_footer(draw: ImageDraw.ImageDraw, width: int, height: int, lines: Sequence[str], size: int) -> None:
    """Yellow outlined lines at the bottom left."""
    _draw_lines(draw, width, height - (size + 2) * len(lines) - 2, lines, size)


def _draw_lines(draw: ImageDraw.ImageDraw, width: int, top: int, lines: Sequence[str], size: int) -> None:
    """Yellow outlined lines from ``top`` down, at the left; a line too wide for the picture gets a smaller font,
    so that long names (LoRA files) stay readable instead of running off the edge."""
    for line in lines:
        fitted, font = size, _font(size)
        # Glyph widths do not scale exactly with the size: estimate, then step down until the line fits.
        length = draw.textlength(line, font=font)
        if length > width - 8:
            fitted = max(6, int(size * (width - 8) / length))
            font = _font(fitted)
            while fitted > 6 and draw.textlength(line, font=font) > width - 8:
                fitted -= 1
                font = _font(fitted)
        draw.text((4, top), line, font=font, fill=(255, 255, 0), stroke_width=1, stroke_fill=(0, 0, 0))
        top += size + 2


def label_picture(img: Image.Image, lines: Sequence[str]) -> Image.Image:
    """A copy of ``img`` (RGB) with ``lines`` written at its top left: how pictures that are not drawn by
    :func:`render_picture` (an upscaled upload) still say that the demo engine made them. The top, because a
    placeholder picture already has its footer at the bottom."""
    out = img.convert("RGB")
    width, height = out.size
    _draw_lines(ImageDraw.Draw(out), width, 2, lines, max(6, min(width, height) // 22))
    return out


def preview_picture(final: Image.Image, step: int, steps: int) -> Image.Image:
    """The sampler preview at ``step`` of ``steps``: the final picture, blurred less as the steps advance."""
    remaining = 1.0 - step / max(1, steps)
    radius = remaining * max(final.size) / 12
    return final.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.2 else final


def preview_jpeg(image: Image.Image, size: int = PREVIEW_SIZE) -> bytes:
    """Encode a preview like ComfyUI: ``ImageOps.contain`` to ``size`` px (upscaling small jobs), JPEG q95."""
    contained = ImageOps.contain(image.convert("RGB"), (size, size))
    buffer = io.BytesIO()
    contained.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def blank_picture(width: int, height: int) -> Image.Image:
    """What decoding a latent that was never sampled gives: a flat grey placeholder with the labels."""
    img = Image.new("RGB", (width, height), (128, 128, 128))
    _draw_labels(img, "", 0, "unsampled latent")
    return img
