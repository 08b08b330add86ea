"""The node classes the demo engine can execute, and their ``object_info`` entries.

Exactly the nodes of the txt2img and img2img API workflows Easel submits, plus PreviewImage. Each node is an async
function receiving the resolved inputs; the "models" are plain marker objects and the "latents" carry the
placeholder pictures drawn by :mod:`render`. Timing, progress messages, interrupts and faults are the executor's
business and reach the nodes only through :class:`NodeContext`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from . import files, render
from .node_specs import NODE_SPECS
from .options import EngineOptions


# --- values flowing between nodes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelHandle:
    """Stands in for MODEL / CLIP / VAE: which checkpoint it came from."""

    kind: str
    checkpoint: str

    def __str__(self) -> str:  # shown in execution_error.current_inputs
        return f"<demo {self.kind} from {self.checkpoint}>"


@dataclass(frozen=True)
class Conditioning:
    text: str
    checkpoint: str

    def __str__(self) -> str:
        return f"<demo CONDITIONING {self.text[:40]!r}>"


@dataclass
class Latent:
    """A LATENT: its pixel size and batch, the img2img source pictures, and (after sampling) the result."""

    width: int
    height: int
    batch_size: int
    source: list[Image.Image] | None = None
    samples: list[Image.Image] | None = None

    def __str__(self) -> str:
        return f"<demo LATENT {self.width}x{self.height} x{self.batch_size}>"


@dataclass
class ImageBatch:
    images: list[Image.Image] = field(default_factory=list)

    def __str__(self) -> str:
        return f"<demo IMAGE x{len(self.images)}>"


@dataclass(frozen=True)
class Mask:
    width: int
    height: int

    def __str__(self) -> str:
        return f"<demo MASK {self.width}x{self.height}>"


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


NodeFunction = Callable[..., Awaitable[NodeResult]]


# --- node implementations -----------------------------------------------------------------------------------------

async def checkpoint_loader_simple(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((ModelHandle("MODEL", ckpt_name), ModelHandle("CLIP", ckpt_name), ModelHandle("VAE", ckpt_name)))


async def clip_text_encode(ctx: NodeContext, text: str, clip: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((Conditioning(text, clip.checkpoint),))


async def empty_latent_image(ctx: NodeContext, width: int, height: int, batch_size: int) -> NodeResult:
    await ctx.node_pause()
    return NodeResult((Latent(width, height, batch_size),))


async def ksampler(ctx: NodeContext, model: ModelHandle, seed: int, steps: int, cfg: float, sampler_name: str,
                   scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: Latent,
                   denoise: float = 1.0) -> NodeResult:
    """Draw the final pictures up front, then "converge" towards them one step at a time."""

    def draw() -> list[Image.Image]:
        sources = latent_image.source or []
        return [
            render.render_picture(
                positive.text, seed, latent_image.width, latent_image.height, index,
                caption=f"{model.checkpoint} {sampler_name}/{scheduler} cfg {cfg:g}",
                source=sources[index] if index < len(sources) else None, denoise=denoise,
            )
            for index in range(latent_image.batch_size)
        ]

    finals = await asyncio.to_thread(draw)
    for step in range(1, steps + 1):
        await ctx.sampler_step(
            step, steps, lambda step=step: render.preview_jpeg(render.preview_picture(finals[0], step, steps))
        )
    return NodeResult((Latent(latent_image.width, latent_image.height, latent_image.batch_size,
                              latent_image.source, finals),))


async def vae_decode(ctx: NodeContext, samples: Latent, vae: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    if samples.samples is not None:
        images = [image.copy() for image in samples.samples]
    elif samples.source is not None:  # encode → decode round trip without sampling
        images = [image.copy() for image in samples.source]
    else:
        images = [render.blank_picture(samples.width, samples.height) for _ in range(samples.batch_size)]
    return NodeResult((ImageBatch(images),))


async def vae_encode(ctx: NodeContext, pixels: ImageBatch, vae: ModelHandle) -> NodeResult:
    await ctx.node_pause()
    width, height = pixels.images[0].size
    return NodeResult((Latent(width, height, len(pixels.images), source=list(pixels.images)),))


async def load_image(ctx: NodeContext, image: str) -> NodeResult:
    """Open the uploaded file. A missing or unreadable file raises here, as in ComfyUI (FileNotFoundError,
    PIL.UnidentifiedImageError), and becomes an ``execution_error``."""
    await ctx.node_pause()
    path = files.input_image_path(ctx.options, image)

    def read() -> Image.Image:
        with Image.open(path) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")

    picture = await asyncio.to_thread(read)
    return NodeResult((ImageBatch([picture]), Mask(*picture.size)))


def validate_load_image(options: EngineOptions, image: Any) -> bool | str:
    """LoadImage.VALIDATE_INPUTS: the file must exist; its content is only read at run time."""
    if not files.input_image_exists(options, str(image)):
        return f"Invalid image file: {image}"
    return True


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
}


def input_types(options: EngineOptions, class_type: str) -> dict[str, Any]:
    """The ``input`` section of a node's object_info, with the server-dependent combo lists filled in."""
    spec = copy.deepcopy(NODE_SPECS[class_type]["input"])
    if class_type == "CheckpointLoaderSimple":
        spec["required"]["ckpt_name"][0] = list(options.checkpoints)
    elif class_type == "LoadImage":
        spec["required"]["image"][0] = files.list_input_images(options)
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
