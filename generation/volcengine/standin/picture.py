"""The stand-in's placeholder picture: a flat card that says what it is, never anything that looks generated."""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont

LABEL = "VolcEngine stand-in"
#: Pictures are drawn at most this large and scaled up: the label is what matters, not the pixels.
DRAW_SIDE = 512


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # no FreeType: Pillow's fixed-size bitmap font
        return ImageFont.load_default()


def placeholder_png(*, prompt: str, req_key: str, seed: int, width: int, height: int) -> bytes:
    """A ``width`` x ``height`` PNG with the label, the model's req_key, the seed and the prompt on a colour taken
    from the prompt and seed (the same inputs give the same picture)."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8")).digest()
    colour = tuple(60 + byte % 120 for byte in digest[:3])
    scale = min(1.0, DRAW_SIDE / max(width, height))
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    card = Image.new("RGB", small, colour)
    draw = ImageDraw.Draw(card)
    big, normal = _font(max(10, small[0] // 14)), _font(max(8, small[0] // 28))
    margin = max(4, small[0] // 24)
    draw.text((margin, margin), LABEL, fill="white", font=big)
    y = margin * 2 + max(10, small[0] // 14)
    draw.text((margin, y), f"{req_key} · seed {seed}", fill="white", font=normal)
    y += max(8, small[0] // 28) + margin
    per_line = max(10, int((small[0] - 2 * margin) / (max(8, small[0] // 28) * 0.6)))
    for line in textwrap.wrap(prompt, width=per_line)[:8]:
        draw.text((margin, y), line, fill="white", font=normal)
        y += max(8, small[0] // 28) + 2
    draw.text((margin, small[1] - margin - max(8, small[0] // 28)), "placeholder, not AI output", fill="white",
              font=normal)
    if small != (width, height):
        card = card.resize((width, height), Image.Resampling.NEAREST)
    out = io.BytesIO()
    card.save(out, format="PNG")
    return out.getvalue()
