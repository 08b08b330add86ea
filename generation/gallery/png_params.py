"""How a picture was made, written into its PNG and read back from one.

Writing: Easel adds two text chunks to the PNGs it stores, `easel` (its own JSON of the
task's parameters) and `parameters` (the A1111 text that many image tools show),
spliced in before IEND: no decoding, no re-encoding, one copy of the bytes.

Reading: `png_params_read` walks the chunks of an uploaded PNG (headers only, jumping
from one to the next) and takes the form's parameters from the first source it
understands: Easel's `easel` chunk, ComfyUI's `prompt` chunk (the API-format graph its
SaveImage embeds), then an A1111 `parameters` text. Pure: no database, no Django models.
"""
from __future__ import annotations

import json
import math
import re
import struct
import zlib

from config.parsers import json_too_deep

from ..limits import SAMPLERS, SCHEDULERS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EASEL_KEY = "easel"
A1111_KEY = "parameters"
COMFY_KEY = "prompt"
EASEL_FORMAT = 1  # `v` in the easel chunk, raised if its meaning ever changes

# A text chunk (compressed or not) is read up to this many bytes: far above any prompt
# or workflow, far below what a small zTXt can expand to (a zlib bomb).
MAX_TEXT_BYTES = 1024 * 1024
# A sampler's inputs are followed through at most this many nodes (LoRA loaders,
# conditioning combiners…); a graph with a cycle ends there too.
MAX_HOPS = 16
MAX_SETTINGS_LINE = 8192
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
_TEXT_KINDS = (b"tEXt", b"zTXt", b"iTXt")

# Error codes of PngParamsError.
NOT_PNG = "not_png"
DAMAGED = "damaged"
NO_PARAMETERS = "no_parameters"

# A1111's sampler and schedule names, as its infotext writes them, and ComfyUI's.
A1111_SAMPLERS = {
    "Euler": "euler", "Euler a": "euler_ancestral", "Heun": "heun", "DPM2": "dpm_2", "DPM2 a": "dpm_2_ancestral",
    "LMS": "lms", "DPM fast": "dpm_fast", "DPM adaptive": "dpm_adaptive", "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ SDE": "dpmpp_sde", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde_heun", "DPM++ 3M SDE": "dpmpp_3m_sde", "DDIM": "ddim", "DDPM": "ddpm",
    "UniPC": "uni_pc", "LCM": "lcm", "DEIS": "deis", "iPNDM": "ipndm", "iPNDM_V": "ipndm_v",
}
A1111_SCHEDULES = {
    "Automatic": "normal", "Uniform": "normal", "Karras": "karras", "Exponential": "exponential",
    "SGM Uniform": "sgm_uniform", "Simple": "simple", "Normal": "normal", "DDIM": "ddim_uniform", "Beta": "beta",
    "KL Optimal": "kl_optimal",
}
_COMFY_TO_A1111_SAMPLER = {comfy: a1111 for a1111, comfy in A1111_SAMPLERS.items()}
_COMFY_TO_A1111_SCHEDULE = {
    "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform", "simple": "Simple",
    "normal": "Normal", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
}
# A1111's `key: value` pairs on the last line of its text; a value may be "quoted".
_A1111_PAIR = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')

FIELDS = ("prompt", "negative_prompt", "model_name", "checkpoint", "template", "width", "height", "seed", "steps",
          "cfg", "sampler", "scheduler", "denoise", "batch_size", "batch_index", "inputs")


class PngParamsError(ValueError):
    """The file is not a PNG, is damaged, or says nothing of how it was made."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


# --- writing ------------------------------------------------------------------------


def task_parameters(*, task, index: int, width: int, height: int) -> dict:
    """What the `easel` chunk says about output `index` of `task`.

    `seed` is the task's seed (the one the batch was drawn from; `batch_index` says
    which picture of the batch this is). Width and height are the picture's own: an
    img2img result has its source's size whatever the request said.
    """
    template = task.template if task.template_id else None
    checkpoint = task.checkpoint if task.checkpoint_id else None
    return {
        "v": EASEL_FORMAT,
        "prompt": task.prompt,
        "negative_prompt": task.negative_prompt,
        "model_name": task.model_name,
        "checkpoint": checkpoint.ckpt_name if checkpoint else "",
        "template": template.slug if template else "",
        "width": width, "height": height, "seed": task.seed, "steps": task.steps, "cfg": task.cfg,
        "sampler": task.sampler, "scheduler": task.scheduler, "denoise": task.denoise,
        "batch_size": task.batch_size, "batch_index": index, "inputs": task.inputs or {},
    }


def a1111_text(params: dict) -> str:
    """The A1111 infotext of these parameters ("prompt\\nNegative prompt: …\\nSteps: …")."""
    sampler = params.get("sampler") or ""
    scheduler = params.get("scheduler") or ""
    pairs = [
        ("Steps", params.get("steps")),
        ("Sampler", _COMFY_TO_A1111_SAMPLER.get(sampler, sampler)),
        ("Schedule type", _COMFY_TO_A1111_SCHEDULE.get(scheduler, scheduler)),
        ("CFG scale", _number_text(params.get("cfg"))),
        ("Seed", params.get("seed")),
        ("Size", f"{params.get('width')}x{params.get('height')}"),
        ("Model", params.get("model_name") or params.get("checkpoint")),
        ("Denoising strength", _number_text(params.get("denoise"))),
    ]
    line = ", ".join(f"{key}: {_a1111_value(value)}" for key, value in pairs if value not in (None, ""))
    lines = [params.get("prompt") or ""]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(line)
    return "\n".join(lines)


def _number_text(value) -> str | None:
    if value is None:
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def _a1111_value(value) -> str:
    text = str(value)
    # A value with a comma, a colon or a line break is quoted, as A1111 does.
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


def text_chunk(key: str, text: str) -> bytes:
    """A PNG text chunk: tEXt when Latin-1 can hold the text (what every reader knows),
    else an uncompressed iTXt in UTF-8 (Chinese prompts). Pillow chooses the same way."""
    name = key.encode("latin-1")
    try:
        kind, body = b"tEXt", name + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        # keyword, NUL, compression flag 0, method 0, no language tag, no translated keyword
        kind, body = b"iTXt", name + b"\0\0\0\0\0" + text.encode("utf-8")
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_parameters(data: bytes, params: dict) -> bytes:
    """The PNG with `easel` and `parameters` chunks added before IEND (every other chunk,
    ComfyUI's `prompt` and `workflow` included, kept as it was). Not a PNG, or no IEND
    found: the bytes unchanged (the picture matters more than its label)."""
    at = _iend_offset(data)
    if at is None:
        return data
    chunks = (text_chunk(EASEL_KEY, json.dumps(params, ensure_ascii=False, separators=(",", ":")))
              + text_chunk(A1111_KEY, a1111_text(params)))
    return b"".join((data[:at], chunks, data[at:]))


def _iend_offset(data: bytes) -> int | None:
    if not data.startswith(PNG_SIGNATURE):
        return None
    if data.endswith(_IEND):  # every encoder we know: IEND is the last 12 bytes
        return len(data) - len(_IEND)
    for kind, start, _end in _chunks(data):  # trailing bytes after IEND: find it
        if kind == b"IEND":
            return start
    return None


# --- reading ------------------------------------------------------------------------


def _chunks(data: bytes):
    """(type, start, end) of each chunk up to IEND; PngParamsError(DAMAGED) when a chunk
    runs past the end of the file."""
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise PngParamsError(DAMAGED)
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise PngParamsError(DAMAGED)
        yield kind, pos, end
        if kind == b"IEND":
            return
        pos = end


def _text_chunks(data: bytes) -> dict[str, bytes]:
    """The last chunk of each key Easel reads (a later chunk wins, as in Pillow), raw."""
    found: dict[str, bytes] = {}
    damaged = False
    try:
        for kind, start, end in _chunks(data):
            if kind not in _TEXT_KINDS:
                continue
            body = data[start + 8:end - 4]
            if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
                damaged = True
                continue
            key = body.split(b"\0", 1)[0]
            if key in (b"easel", b"prompt", b"parameters"):
                found[key.decode()] = kind + body
    except PngParamsError:
        damaged = True
    if damaged and not found:
        raise PngParamsError(DAMAGED)
    return found


def _inflate(data: bytes) -> bytes | None:
    """zlib data expanded up to MAX_TEXT_BYTES; None when damaged or larger."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else out


def _chunk_text(raw: bytes) -> str | None:
    """The text of a tEXt, zTXt or iTXt chunk (type then body), or None when unreadable."""
    kind, body = raw[:4], raw[4:]
    _key, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return rest[:MAX_TEXT_BYTES].decode("latin-1")
    if kind == b"zTXt":
        text = _inflate(rest[1:]) if rest[:1] == b"\0" else None
        return None if text is None else text.decode("latin-1")
    # iTXt: compression flag, method, language tag NUL, translated keyword NUL, text.
    if len(rest) < 2:
        return None
    compressed, method = rest[0], rest[1]
    parts = rest[2:].split(b"\0", 2)
    if len(parts) < 3:
        return None
    text = parts[2]
    if compressed:
        text = _inflate(text) if method == 0 else None
        if text is None:
            return None
    elif len(text) > MAX_TEXT_BYTES:
        return None
    return text.decode("utf-8", errors="replace")


def png_params_read(data: bytes) -> dict:
    """The generation parameters a PNG carries, with the source they came from.

    Returns a dict with every key of FIELDS (None where the picture does not say) and
    `source` ("easel", "comfyui" or "a1111"). Raises PngParamsError: NOT_PNG, DAMAGED
    (its chunks run past the end of the file, or a checksum fails), NO_PARAMETERS.
    The caller bounds the size of `data` (the upload limit).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise PngParamsError(NOT_PNG)
    chunks = _text_chunks(data)
    for key, source, parse in ((EASEL_KEY, "easel", _from_easel), (COMFY_KEY, "comfyui", _from_comfy),
                               (A1111_KEY, "a1111", _from_a1111)):
        text = _chunk_text(chunks[key]) if key in chunks else None
        values = parse(text) if text else None
        if values:
            return {**dict.fromkeys(FIELDS), **_clean(values), "source": source}
    raise PngParamsError(NO_PARAMETERS)


def _json(text: str):
    if json_too_deep(text):
        return None
    try:
        # NaN and Infinity are not JSON: refused, so that the answer stays valid JSON.
        return json.loads(text, parse_constant=_refuse)
    except ValueError:
        return None


def _refuse(name):
    raise ValueError(name)


def _from_easel(text: str) -> dict | None:
    values = _json(text)
    return values if isinstance(values, dict) else None


# --- ComfyUI's API-format graph -----------------------------------------------------

SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")


def _node_order(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _from_comfy(text: str) -> dict | None:
    graph = _json(text)
    if not isinstance(graph, dict):
        return None
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    # The first sampler: in a two-pass (hires) graph the first pass holds the base settings.
    samplers = [k for k in sorted(nodes, key=_node_order) if nodes[k].get("class_type") in SAMPLER_NODES]
    if not samplers:
        return None
    inputs = nodes[samplers[0]]["inputs"]
    latent = _find(nodes, inputs.get("latent_image"), ("width",))
    checkpoint = _find(nodes, inputs.get("model"), ("ckpt_name",))
    denoise = inputs.get("denoise")
    return {
        "prompt": _text(nodes, inputs.get("positive")),
        "negative_prompt": _text(nodes, inputs.get("negative")),
        "checkpoint": checkpoint.get("ckpt_name") if checkpoint else None,
        "width": _literal(nodes, latent.get("width"), "width") if latent else None,
        "height": _literal(nodes, latent.get("height"), "height") if latent else None,
        "batch_size": _literal(nodes, latent.get("batch_size"), "batch_size") if latent else None,
        "seed": _literal(nodes, inputs.get("seed", inputs.get("noise_seed")), "seed", "noise_seed", "value"),
        "steps": _literal(nodes, inputs.get("steps"), "steps", "value"),
        "cfg": _literal(nodes, inputs.get("cfg"), "cfg", "value"),
        "sampler": _literal(nodes, inputs.get("sampler_name"), "sampler_name", "value"),
        "scheduler": _literal(nodes, inputs.get("scheduler"), "scheduler", "value"),
        "denoise": _literal(nodes, denoise, "denoise", "value"),
    }


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))


def _find(nodes: dict, link, keys: tuple[str, ...]) -> dict | None:
    """The inputs of the first node upstream of `link` that has all of `keys` (through
    LoRA loaders and the like: each node's linked inputs are followed, breadth first)."""
    queue = [link]
    seen: set[str] = set()
    while queue and len(seen) < MAX_HOPS:
        value = queue.pop(0)
        if not _is_link(value) or str(value[0]) in seen or str(value[0]) not in nodes:
            continue
        seen.add(str(value[0]))
        inputs = nodes[str(value[0])]["inputs"]
        if all(key in inputs for key in keys):
            return inputs
        queue.extend(v for v in inputs.values() if _is_link(v))
    return None


def _literal(nodes: dict, value, *keys: str):
    """A value, or what the node it links to holds under one of `keys` (a primitive node)."""
    if _is_link(value):
        target = nodes.get(str(value[0]), {}).get("inputs", {})
        value = next((target[key] for key in keys if key in target and not _is_link(target[key])), None)
    return value


def _text(nodes: dict, link) -> str | None:
    """The text of the CLIPTextEncode (or any text encoder) upstream of a conditioning."""
    inputs = _find(nodes, link, ("text",))
    if inputs is None:
        return None
    text = _literal(nodes, inputs["text"], "text", "value", "string")
    return text if isinstance(text, str) else None


# --- A1111's infotext ---------------------------------------------------------------


def _from_a1111(text: str) -> dict | None:
    lines = text.strip().split("\n")
    # A1111 always ends with its settings line; a longer one than any real one is
    # refused before the pattern below (which backtracks over a line without colons).
    if not lines[-1].lstrip().startswith("Steps:") or len(lines[-1]) > MAX_SETTINGS_LINE:
        return None
    pairs = {}
    for match in _A1111_PAIR.finditer(lines[-1]):
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        pairs[key] = value
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    sampler, scheduler = _a1111_sampler(pairs.get("Sampler", ""), pairs.get("Schedule type", ""))
    width, _, height = pairs.get("Size", "").partition("x")
    return {
        "prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative),
        "checkpoint": pairs.get("Model") or None,
        "width": width, "height": height, "seed": pairs.get("Seed"), "steps": pairs.get("Steps"),
        "cfg": pairs.get("CFG scale"), "sampler": sampler, "scheduler": scheduler,
        "denoise": pairs.get("Denoising strength"),
    }


def _a1111_sampler(name: str, schedule: str) -> tuple[str | None, str | None]:
    # Older A1111 versions put the schedule in the sampler's name ("DPM++ 2M Karras").
    if name not in A1111_SAMPLERS:
        for suffix in ("Karras", "Exponential"):
            if name.endswith(" " + suffix):
                name, schedule = name[:-len(suffix) - 1], schedule or suffix
    sampler = A1111_SAMPLERS.get(name, name)
    return sampler, A1111_SCHEDULES.get(schedule, schedule) or None


# --- one shape for every source -----------------------------------------------------


def _int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        return int(value)
    return value if isinstance(value, int) and abs(value) < 2**64 else None


def _float(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _str(value):
    return value if isinstance(value, str) else None


def _clean(values: dict) -> dict:
    """Only the known keys, each of its own type (None when it is not): the file is the
    uploader's and says whatever it likes. Unknown samplers and schedulers are dropped."""
    sampler, scheduler = _str(values.get("sampler")), _str(values.get("scheduler"))
    inputs = values.get("inputs")
    return {
        "prompt": _str(values.get("prompt")),
        "negative_prompt": _str(values.get("negative_prompt")),
        "model_name": _str(values.get("model_name")),
        "checkpoint": _str(values.get("checkpoint")),
        "template": _str(values.get("template")),
        "width": _int(values.get("width")), "height": _int(values.get("height")),
        "seed": _int(values.get("seed")), "steps": _int(values.get("steps")),
        "cfg": _float(values.get("cfg")), "denoise": _float(values.get("denoise")),
        "sampler": sampler if sampler in SAMPLERS else None,
        "scheduler": scheduler if scheduler in SCHEDULERS else None,
        "batch_size": _int(values.get("batch_size")), "batch_index": _int(values.get("batch_index")),
        "inputs": inputs if isinstance(inputs, dict) else None,
    }
