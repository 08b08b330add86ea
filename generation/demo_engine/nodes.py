"""The node classes the demo engine can execute, and their ``object_info`` entries.

The nodes of the workflows Easel ships (txt2img, img2img, text to image with LoRAs, hires fix, upscale, inpaint)
and their common relatives (PreviewImage, LoraLoaderModelOnly, VAELoader, LatentUpscale, ImageScale,
SetLatentNoiseMask, ImageToMask, InvertMask, GrowMask). Each node is an async function receiving the resolved
inputs; the "models" are plain marker objects and the "latents" carry the placeholder pictures drawn by
:mod:`render`. What a real model would change and a placeholder cannot show (a LoRA's style, a second sampler
pass) is written on the picture instead; what is geometry (sizes, crops, masks) follows ComfyUI exactly. Timing,
progress messages, interrupts and faults are the executor's business and reach the nodes only through
:class:`NodeContext`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from . import files, imaging, render
from .node_specs import NODE_SPECS
from .options import EngineOptions, upscale_factor

# --- values flowing between nodes -------------------------------------------------------------------------------

#: LoRAs applied to a model or CLIP: (file name, strength) in the order they were applied.
Loras = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ModelHandle:
    """Stands in for MODEL / CLIP / VAE: which checkpoint (or VAE file) it came from and which LoRAs patch it."""

    kind: str
    checkpoint: str
    loras: Loras = ()

    def __str__(self) -> str:  # shown in execution_error.current_inputs
        patched = "".join(f" + {name} {strength:g}" for name, strength in self.loras)
        return f"<demo {self.kind} from {self.checkpoint}{patched}>"


@dataclass(frozen=True)
class Conditioning:
    text: str
    checkpoint: str
    #: The LoRAs of the CLIP that encoded the text (a LoRA's strength_clip acts here).
    loras: Loras = ()

    def __str__(self) -> str:
        return f"<demo CONDITIONING {self.text[:40]!r}>"


@dataclass
class Latent:
    """A LATENT: its pixel size and batch, the encoded pictures (img2img, or an upscaled earlier result), and
    (after sampling) the result."""

    width: int
    height: int
    batch_size: int
    source: list[Image.Image] | None = None
    samples: list[Image.Image] | None = None
    #: ComfyUI's ``noise_mask`` (SetLatentNoiseMask, VAEEncodeForInpaint): where a sampler may change the
    #: picture, as masks of any size (resized when used, as ComfyUI interpolates it to the latent's size).
    noise_mask: list[Image.Image] | None = None
    #: What happened to this latent that its pictures should say (a latent upscale, an earlier sampler pass).
    notes: tuple[str, ...] = ()
    #: How many sampler passes it went through; the second and later ones are written on the picture.
    passes: int = 0
    #: The pictures of :meth:`content` before the demo labels were written on them, when the engine drew them. A
    #: later sampler pass starts from these, so the old labels do not show through the new ones (a hires fix).
    unlabelled: list[Image.Image] | None = None

    def content(self) -> list[Image.Image] | None:
        """What decoding it now would show: the sampled pictures, else the encoded ones (None: empty latent)."""
        return self.samples if self.samples is not None else self.source

    def starting_point(self) -> list[Image.Image] | None:
        """What a sampler starts from: :meth:`content`, without the labels where the engine knows them."""
        return self.unlabelled if self.unlabelled is not None else self.content()

    def __str__(self) -> str:
        return f"<demo LATENT {self.width}x{self.height} x{self.batch_size}>"


@dataclass
class ImageBatch:
    images: list[Image.Image] = field(default_factory=list)

    def __str__(self) -> str:
        return f"<demo IMAGE x{len(self.images)}>"


@dataclass
class Mask:
    """A MASK batch: mode "L" pictures, 255 where the mask is set (ComfyUI's 1.0)."""

    images: list[Image.Image]

    def __str__(self) -> str:
        width, height = self.images[0].size if self.images else (0, 0)
        return f"<demo MASK {width}x{height} x{len(self.images)}>"


@dataclass(frozen=True)
class UpscaleModel:
    """Stands in for UPSCALE_MODEL: its file name and the factor that name announces."""

    name: str
    scale: int

    def __str__(self) -> str:
        return f"<demo UPSCALE_MODEL {self.name} x{self.scale}>"


@dataclass
class NodeResult:
    """What a node returns: its outputs (by slot) and, for output nodes, the UI dict (``{"images": [...]}``)."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class NodeContext(Protocol):
    """The executor's side of a running node."""

    options: EngineOptions
    prompt: dict[str, Any]
    prompt_id: str
    node_id: str

    async def node_pause(self) -> None:
        """Spend ``node_delay`` (a non-sampler node's simulated work)."""

    async def sampler_step(self, step: int, steps: int, preview: Callable[[], bytes]) -> None:
        """Spend ``step_delay``, apply faults/interrupts, then report progress and the preview for ``step``."""

    async def node_progress(self, value: int, total: int) -> None:
        """Report progress without a preview (a ComfyUI ProgressBar update outside a sampler)."""


NodeFunction = Callable[..., Awaitable[NodeResult]]


# --- loaders ------------------------------------------------------------------------------------------------------

async def checkpoint_loader_simple(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((ModelHandle("MODEL", ckpt_name), ModelHandle("CLIP", ckpt_name), ModelHandle("VAE", ckpt_name)))


def _patched(handle: ModelHandle, lora_name: str, strength: float) -> ModelHandle:
    """The handle with one more LoRA; a zero strength adds a patch that changes nothing, so it is not recorded."""
    if strength == 0:
        return handle
    return dataclasses.replace(handle, loras=handle.loras + ((lora_name, strength),))


async def lora_loader(ctx: NodeContext, model: ModelHandle, clip: ModelHandle, lora_name: str,
                      strength_model: float, strength_clip: float) -> NodeResult:
    """LoraLoader: ComfyUI returns model and clip untouched (without even reading the file) when both strengths
    are 0, which is what makes a LoRA slot at 0 an unused slot."""
    await ctx.node_pause()
    if strength_model == 0 and strength_clip == 0:
        return NodeResult((model, clip))
    return NodeResult((_patched(model, lora_name, strength_model), _patched(clip, lora_name, strength_clip)))


async def lora_loader_model_only(ctx: NodeContext, model: ModelHandle, lora_name: str,
                                 strength_model: float) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((_patched(model, lora_name, strength_model),))


async def vae_loader(ctx: NodeContext, vae_name: str) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((ModelHandle("VAE", vae_name),))


async def upscale_model_loader(ctx: NodeContext, model_name: str) -> NodeResult:
    await ctx.node_pause()
    scale = upscale_factor(model_name)
    if scale is None:  # validation only lets through the engine's own names, which all announce a factor
        raise ValueError(f"Upscale model {model_name} has no factor in its name")
    return NodeResult((UpscaleModel(model_name, scale),))


# --- text, latents and sampling -----------------------------------------------------------------------------------

async def clip_text_encode(ctx: NodeContext, text: str, clip: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((Conditioning(text, clip.checkpoint, clip.loras),))


async def empty_latent_image(ctx: NodeContext, width: int, height: int, batch_size: int) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((Latent(width, height, batch_size),))


def lora_notes(model_loras: Loras, clip_loras: Loras) -> list[str]:
    """One footer line per LoRA: ``LoRA <name> model <s> clip <s>``.

    Patches of the same file add up (a LoRA's effect is linear in its strength), so a file applied twice is
    written once with the summed strength, and a side whose strengths cancel out is left off.
    """
    totals: dict[str, dict[str, float]] = {}
    for side, loras in (("model", model_loras), ("clip", clip_loras)):
        for name, strength in loras:
            sides = totals.setdefault(name, {})
            sides[side] = sides.get(side, 0.0) + strength
    lines = []
    for name, sides in totals.items():
        parts = [f"{side} {round(total, 4):g}" for side, total in sides.items() if round(total, 4) != 0]
        if parts:
            lines.append(f"LoRA {name} " + " ".join(parts))
    return lines


def _canvas(picture: Image.Image | None, width: int, height: int) -> Image.Image:
    """A latent's picture at its size; an empty latent decodes to flat grey."""
    if picture is None:
        return Image.new("RGB", (width, height), (128, 128, 128))
    picture = picture.convert("RGB")
    return picture if picture.size == (width, height) else picture.resize((width, height), Image.Resampling.BILINEAR)


def _inpainted(text: str, seed: int, index: int, kept: Image.Image | None, start: Image.Image | None,
               mask: Image.Image, width: int, height: int, caption: str, denoise: float,
               notes: list[str]) -> tuple[Image.Image, Image.Image]:
    """Sampling with a noise mask: only the masked area changes. Returns (picture, the same unlabelled).

    A new placeholder is drawn to fit the mask's bounding box (so "DEMO" and the prompt show even in a small
    region), then blended in with the mask as weight: where the mask is 0 the picture stays exactly what the latent
    held (``kept``), where it is 1 it is the new drawing, in between a mix (a soft SetLatentNoiseMask mask). Real
    ComfyUI applies the mask at latent resolution (8 px blocks) and its VAE round trip alters every pixel a little;
    the demo keeps the unmasked pixels bit for bit, which is what lets a test tell inside from outside.
    """
    kept_canvas, start_canvas = _canvas(kept, width, height), _canvas(start, width, height)
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    box = mask.getbbox()
    if box is None:  # an empty mask: the sampler changes nothing
        return kept_canvas, start_canvas
    background = render.render_background(text, seed, box[2] - box[0], box[3] - box[1], index,
                                          source=start_canvas.crop(box), denoise=denoise)
    region = render.label(background, text, seed, caption, notes)
    painted, painted_clean = kept_canvas.copy(), start_canvas.copy()
    painted.paste(region, box[:2])
    painted_clean.paste(background, box[:2])
    return Image.composite(painted, kept_canvas, mask), Image.composite(painted_clean, start_canvas, mask)


async def ksampler(ctx: NodeContext, model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str,
                   scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: Latent,
                   denoise: float = 1.0) -> NodeResult:
    """Draw the final pictures up front, then "converge" towards them one step at a time.

    The starting pictures are what the latent holds (an img2img source, an earlier pass's result upscaled for a
    hires fix); ``denoise`` decides how much of them survives. The footer lists the LoRAs of the model and of the
    CLIP behind ``positive``, the latent's history and, from the second pass on, the pass and its denoise.
    """
    kept, start = latent_image.content(), latent_image.starting_point()
    history = list(latent_image.notes)
    if latent_image.passes:
        history.append(f"sampler pass {latent_image.passes + 1}, denoise {denoise:g}")
    notes = lora_notes(model.loras, positive.loras) + history
    masks = latent_image.noise_mask
    caption = f"{model.checkpoint} {sampler_name}/{scheduler} cfg {cfg:g}"
    width, height = latent_image.width, latent_image.height

    def pick(pictures: list[Image.Image] | None, index: int) -> Image.Image | None:
        return pictures[index] if pictures is not None and index < len(pictures) else None

    def draw() -> tuple[list[Image.Image], list[Image.Image]]:
        finals, clean = [], []
        for index in range(latent_image.batch_size):
            if masks:
                # Like ComfyUI's repeat_to_batch_size: a shorter mask batch repeats.
                final, background = _inpainted(positive.text, seed, index, pick(kept, index), pick(start, index),
                                               masks[index % len(masks)], width, height, caption, denoise, notes)
            else:
                background = render.render_background(positive.text, seed, width, height, index,
                                                      source=pick(start, index), denoise=denoise)
                final = render.label(background, positive.text, seed, caption, notes)
            finals.append(final)
            clean.append(background)
        return finals, clean

    finals, clean = await asyncio.to_thread(draw)
    for step in range(1, steps + 1):
        await ctx.sampler_step(
            step, steps, lambda step=step: render.preview_jpeg(render.preview_picture(finals[0], step, steps))
        )
    # ComfyUI copies the latent dict and replaces "samples": the noise mask stays on for a later sampler.
    return NodeResult((Latent(width, height, latent_image.batch_size, kept, finals, masks, tuple(history),
                              latent_image.passes + 1, clean),))


def _rescaled(latent: Latent, width: int, height: int, method: str, crop: str, note: str) -> Latent:
    """A latent resized to ``width`` x ``height`` pixels: its pictures become the starting point of a later
    sampler (samples → source), the noise mask is kept (ComfyUI copies the dict) and ``note`` joins its history."""

    def resized(pictures: list[Image.Image] | None) -> list[Image.Image] | None:
        return None if pictures is None else [imaging.common_upscale(p, width, height, method, crop)
                                              for p in pictures]

    return Latent(width, height, latent.batch_size, resized(latent.content()), None, latent.noise_mask,
                  latent.notes + (note,), latent.passes, resized(latent.unlabelled))


async def latent_upscale_by(ctx: NodeContext, samples: Latent, upscale_method: str, scale_by: float) -> NodeResult:
    """LatentUpscaleBy scales the latent (1/8 of the picture) and rounds there: 512 px x 1.5 → 96 → 768 px."""
    await ctx.node_pause()
    scale = imaging.LATENT_SCALE
    width = round(samples.width // scale * scale_by) * scale
    height = round(samples.height // scale * scale_by) * scale
    note = f"latent upscaled x{scale_by:g} ({upscale_method}) from {samples.width}x{samples.height}"
    return NodeResult((await asyncio.to_thread(_rescaled, samples, width, height, upscale_method, "disabled", note),))


async def latent_upscale(ctx: NodeContext, samples: Latent, upscale_method: str, width: int, height: int,
                         crop: str) -> NodeResult:
    """LatentUpscale: 0 for one side keeps the aspect ratio, each side at least 64 px, then cut to whole latent
    pixels (``width // 8``); 0 for both returns the latent unchanged."""
    await ctx.node_pause()
    if width == 0 and height == 0:
        return NodeResult((samples,))
    scale = imaging.LATENT_SCALE
    latent_w, latent_h = samples.width // scale, samples.height // scale
    if width == 0:
        height = max(64, height)
        width = max(64, round(latent_w * height / latent_h))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(latent_h * width / latent_w))
    else:
        width, height = max(64, width), max(64, height)
    width, height = width // scale * scale, height // scale * scale
    note = f"latent resized ({upscale_method}) from {samples.width}x{samples.height}"
    return NodeResult((await asyncio.to_thread(_rescaled, samples, width, height, upscale_method, crop, note),))


async def set_latent_noise_mask(ctx: NodeContext, samples: Latent, mask: Mask) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((dataclasses.replace(samples, noise_mask=list(mask.images)),))


async def vae_decode(ctx: NodeContext, samples: Latent, vae: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    content = samples.content()  # sampled pictures, or an encode → decode round trip without sampling
    if content is not None:
        images = [image.copy() for image in content]
    else:
        images = [render.blank_picture(samples.width, samples.height) for _ in range(samples.batch_size)]
    return NodeResult((ImageBatch(images),))


async def vae_encode(ctx: NodeContext, pixels: ImageBatch, vae: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    width, height = pixels.images[0].size
    return NodeResult((Latent(width, height, len(pixels.images), source=list(pixels.images)),))


async def vae_encode_for_inpaint(ctx: NodeContext, pixels: ImageBatch, vae: ModelHandle, mask: Mask,
                                 grow_mask_by: int = 6) -> NodeResult:
    """VAEEncodeForInpaint, step by step as ComfyUI does it: the mask is resized to the picture (bilinear), both are
    cut (centred) to a multiple of 8 px, the masked pixels (mask rounded) are set to grey so nothing of them
    survives, and the noise mask is the rounded mask grown by ``grow_mask_by`` pixels."""
    await ctx.node_pause()
    scale = imaging.LATENT_SCALE

    def encode() -> tuple[list[Image.Image], list[Image.Image]]:
        greyed, grown = [], []
        for index, picture in enumerate(pixels.images):
            width, height = picture.size
            weights = mask.images[index % len(mask.images)]
            if weights.size != (width, height):
                weights = weights.resize((width, height), Image.Resampling.BILINEAR)
            cut_w, cut_h = width // scale * scale, height // scale * scale
            if (cut_w, cut_h) != (width, height):
                box = ((width % scale) // 2, (height % scale) // 2)
                box = (box[0], box[1], box[0] + cut_w, box[1] + cut_h)
                picture, weights = picture.crop(box), weights.crop(box)
            rounded = imaging.binary(weights)
            grey = Image.new("RGB", picture.size, (128, 128, 128))  # ComfyUI's 0.5
            greyed.append(Image.composite(grey, picture.convert("RGB"), rounded))
            grown.append(imaging.grow_box(rounded, grow_mask_by))
        return greyed, grown

    greyed, grown = await asyncio.to_thread(encode)
    width, height = greyed[0].size
    return NodeResult((Latent(width, height, len(greyed), source=greyed, noise_mask=grown),))


# --- pictures and masks -------------------------------------------------------------------------------------------

async def load_image(ctx: NodeContext, image: str) -> NodeResult:
    """Open the uploaded file. A missing or unreadable file raises here, as in ComfyUI (FileNotFoundError,
    PIL.UnidentifiedImageError), and becomes an ``execution_error``.

    The MASK output is ComfyUI's: ``1 - alpha`` (transparent pixels are the ones to repaint, which is how
    ComfyUI's mask editor saves a mask), and a 64x64 empty mask for a picture without transparency."""
    await ctx.node_pause()
    path = files.input_image_path(ctx.options, image)

    def read() -> tuple[Image.Image, Image.Image]:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened)
            if "A" in picture.getbands():
                mask = ImageOps.invert(picture.getchannel("A"))
            elif picture.mode == "P" and "transparency" in picture.info:
                mask = ImageOps.invert(picture.convert("RGBA").getchannel("A"))
            else:
                mask = Image.new("L", (64, 64), 0)
            return picture.convert("RGB"), mask

    picture, mask = await asyncio.to_thread(read)
    return NodeResult((ImageBatch([picture]), Mask([mask])))


def validate_load_image(options: EngineOptions, image: Any) -> bool | str:
    """LoadImage.VALIDATE_INPUTS (and LoadImageMask's, the same): the file must exist; its content is only read at
    run time."""
    if not files.input_image_exists(options, str(image)):
        return f"Invalid image file: {image}"
    return True


async def load_image_mask(ctx: NodeContext, image: str, channel: str) -> NodeResult:
    """LoadImageMask: one channel of the picture (as RGBA) as the mask; for ``alpha`` inverted like LoadImage's
    MASK (transparent = masked), for ``red``/``green``/``blue`` as it is (white = masked)."""
    await ctx.node_pause()
    path = files.input_image_path(ctx.options, image)

    def read() -> Image.Image:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.getbands() != ("R", "G", "B", "A"):
                if picture.mode == "I":  # 16-bit greyscale PNGs: ComfyUI scales them down to 8 bits first
                    picture = picture.point(lambda value: value * (1 / 255))
                picture = picture.convert("RGBA")
            band = picture.getchannel(channel[0].upper())
            return ImageOps.invert(band) if channel == "alpha" else band.copy()

    return NodeResult((Mask([await asyncio.to_thread(read)]),))


async def image_to_mask(ctx: NodeContext, image: ImageBatch, channel: str) -> NodeResult:
    await ctx.node_pause()
    index = ["red", "green", "blue", "alpha"].index(channel)
    bands = len(image.images[0].getbands()) if image.images else 3
    if index >= bands:  # IMAGE tensors have no alpha: ComfyUI fails indexing it, with torch's message
        raise IndexError(f"index {index} is out of bounds for dimension 3 with size {bands}")
    return NodeResult((Mask([picture.getchannel(index) for picture in image.images]),))


async def invert_mask(ctx: NodeContext, mask: Mask) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((Mask([ImageOps.invert(m) for m in mask.images]),))


async def grow_mask(ctx: NodeContext, mask: Mask, expand: int, tapered_corners: bool) -> NodeResult:
    await ctx.node_pause()
    grown = await asyncio.to_thread(lambda: [imaging.grow_mask(m, expand, tapered_corners) for m in mask.images])
    return NodeResult((Mask(grown),))


async def image_upscale_with_model(ctx: NodeContext, upscale_model: UpscaleModel, image: ImageBatch) -> NodeResult:
    """ImageUpscaleWithModel: the picture at ``scale`` times its size (a plain Lanczos resize, labelled as such,
    since the demo has no model). Progress is reported per 512 px tile, as ComfyUI's tiled upscale reports it:
    ``progress`` messages without previews."""
    scale, name = upscale_model.scale, upscale_model.name

    def enlarge(picture: Image.Image) -> Image.Image:
        size = (round(picture.width * scale), round(picture.height * scale))
        return render.label_picture(picture.resize(size, Image.Resampling.LANCZOS),
                                    [f"Easel demo upscale x{scale} ({name})", "plain resize, not AI output"])

    tiles = [imaging.tiled_scale_steps(picture.width, picture.height) for picture in image.images]
    total, done, out = sum(tiles), 0, []
    for picture, count in zip(image.images, tiles):
        out.append(await asyncio.to_thread(enlarge, picture))
        for _ in range(count):
            await ctx.node_pause()
            done += 1
            await ctx.node_progress(done, total)
    return NodeResult((ImageBatch(out),))


async def image_scale_by(ctx: NodeContext, image: ImageBatch, upscale_method: str, scale_by: float) -> NodeResult:
    await ctx.node_pause()

    def scale(picture: Image.Image) -> Image.Image:
        size = (round(picture.width * scale_by), round(picture.height * scale_by))
        return imaging.common_upscale(picture, size[0], size[1], upscale_method, "disabled")

    return NodeResult((ImageBatch(await asyncio.to_thread(lambda: [scale(p) for p in image.images])),))


async def image_scale(ctx: NodeContext, image: ImageBatch, upscale_method: str, width: int, height: int,
                      crop: str) -> NodeResult:
    """ImageScale: 0 for one side keeps the aspect ratio; 0 for both returns the pictures unchanged."""
    await ctx.node_pause()
    if width == 0 and height == 0:
        return NodeResult((image,))

    def scale(picture: Image.Image) -> Image.Image:
        w, h = width, height
        if w == 0:
            w = max(1, round(picture.width * h / picture.height))
        elif h == 0:
            h = max(1, round(picture.height * w / picture.width))
        return imaging.common_upscale(picture, w, h, upscale_method, crop)

    return NodeResult((ImageBatch(await asyncio.to_thread(lambda: [scale(p) for p in image.images])),))


# --- output nodes -------------------------------------------------------------------------------------------------

async def _write_images(ctx: NodeContext, images: ImageBatch, base: Any, prefix: str, kind: str) -> NodeResult:
    """Save a batch as ``{prefix}_{counter:05}_.png`` with the prompt embedded, like ComfyUI's SaveImage."""
    first = images.images[0] if images.images else None
    folder, stem, counter, subfolder = files.next_save_path(base, prefix)
    prompt_text = json.dumps(ctx.prompt)

    def write() -> list[dict[str, str]]:
        results = []
        for index, picture in enumerate(images.images):
            name = f"{stem.replace('%batch_num%', str(index))}_{counter + index:05}_.png"
            info = PngInfo()
            info.add_text("prompt", prompt_text)
            info.add_text("Software", "Easel demo engine (placeholder image, not AI output)")
            picture.save(folder / name, pnginfo=info, compress_level=4)
            results.append({"filename": name, "subfolder": subfolder, "type": kind})
        return results

    await ctx.node_pause()
    saved = await asyncio.to_thread(write) if first is not None else []
    return NodeResult((), {"images": saved})


async def save_image(ctx: NodeContext, images: ImageBatch, filename_prefix: str = "ComfyUI") -> NodeResult:
    return await _write_images(ctx, images, ctx.options.output_dir, filename_prefix, "output")


async def preview_image(ctx: NodeContext, images: ImageBatch) -> NodeResult:
    """PreviewImage writes to the temp folder as ``ComfyUI_temp_<5 random letters>_NNNNN_.png``."""
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return await _write_images(ctx, images, ctx.options.temp_dir, f"ComfyUI_temp_{suffix}", "temp")


@dataclass(frozen=True)
class NodeClass:
    """One executable node class: its function, optional VALIDATE_INPUTS, and object_info spec."""

    name: str
    function: NodeFunction
    #: ComfyUI's VALIDATE_INPUTS: called with the inputs named in ``custom_inputs``, replacing the built-in
    #: range/list checks for them; returns True or an error string.
    validate_inputs: Callable[..., bool | str] | None = None
    custom_inputs: tuple[str, ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        return NODE_SPECS[self.name]

    @property
    def output_node(self) -> bool:
        return bool(self.spec["output_node"])

    @property
    def return_types(self) -> list[str]:
        return list(self.spec["output"])


NODE_CLASSES: dict[str, NodeClass] = {
    "CheckpointLoaderSimple": NodeClass("CheckpointLoaderSimple", checkpoint_loader_simple),
    "CLIPTextEncode": NodeClass("CLIPTextEncode", clip_text_encode),
    "EmptyLatentImage": NodeClass("EmptyLatentImage", empty_latent_image),
    "KSampler": NodeClass("KSampler", ksampler),
    "VAEDecode": NodeClass("VAEDecode", vae_decode),
    "VAEEncode": NodeClass("VAEEncode", vae_encode),
    "LoadImage": NodeClass("LoadImage", load_image, validate_load_image, ("image",)),
    "SaveImage": NodeClass("SaveImage", save_image),
    "PreviewImage": NodeClass("PreviewImage", preview_image),
    "LoraLoader": NodeClass("LoraLoader", lora_loader),
    "LoraLoaderModelOnly": NodeClass("LoraLoaderModelOnly", lora_loader_model_only),
    "VAELoader": NodeClass("VAELoader", vae_loader),
    "LatentUpscale": NodeClass("LatentUpscale", latent_upscale),
    "LatentUpscaleBy": NodeClass("LatentUpscaleBy", latent_upscale_by),
    "UpscaleModelLoader": NodeClass("UpscaleModelLoader", upscale_model_loader),
    "ImageUpscaleWithModel": NodeClass("ImageUpscaleWithModel", image_upscale_with_model),
    "ImageScale": NodeClass("ImageScale", image_scale),
    "ImageScaleBy": NodeClass("ImageScaleBy", image_scale_by),
    "VAEEncodeForInpaint": NodeClass("VAEEncodeForInpaint", vae_encode_for_inpaint),
    "SetLatentNoiseMask": NodeClass("SetLatentNoiseMask", set_latent_noise_mask),
    "LoadImageMask": NodeClass("LoadImageMask", load_image_mask, validate_load_image, ("image",)),
    "ImageToMask": NodeClass("ImageToMask", image_to_mask),
    "InvertMask": NodeClass("InvertMask", invert_mask),
    "GrowMask": NodeClass("GrowMask", grow_mask),
}


def input_types(options: EngineOptions, class_type: str) -> dict[str, Any]:
    """The ``input`` section of a node's object_info, with the server-dependent combo lists filled in."""
    spec = copy.deepcopy(NODE_SPECS[class_type]["input"])
    required = spec["required"]
    if class_type == "CheckpointLoaderSimple":
        required["ckpt_name"][0] = list(options.checkpoints)
    elif class_type in ("LoraLoader", "LoraLoaderModelOnly"):
        required["lora_name"][0] = list(options.loras)
    elif class_type == "UpscaleModelLoader":  # the COMBO form keeps its choices under "options"
        required["model_name"][1]["options"] = list(options.upscale_models)
    elif class_type == "VAELoader":  # ComfyUI always offers its built-in "pixel_space" after the VAE files
        required["vae_name"][0] = [*options.vaes, "pixel_space"]
    elif class_type == "LoadImage":
        required["image"][0] = files.list_input_images(options)
    elif class_type == "LoadImageMask":
        required["image"][0] = files.list_input_files(options)
    return spec


def object_info(options: EngineOptions, class_type: str | None = None) -> dict[str, Any]:
    """``GET /object_info`` (all nodes) or ``GET /object_info/{class}`` (``{}`` when unknown, like ComfyUI)."""
    names = list(NODE_CLASSES) if class_type is None else [class_type] if class_type in NODE_CLASSES else []
    result = {}
    for name in names:
        entry = copy.deepcopy(NODE_SPECS[name])
        entry["input"] = input_types(options, name)
        result[name] = entry
    return result
