"""Engine options (command line) and injectable faults.

Faults exist so the Easel client can be tested against the failure modes of a real ComfyUI (a node raising, a
websocket dropping, the process dying, the port refusing connections) without a real one. They are settable on
the command line and at run time through ``POST /demo/faults``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINTS = ("demo-sd15.safetensors", "demo-sdxl.safetensors")
#: Four, so every slot of the built-in "text to image with LoRAs" graph can default to a different one.
DEFAULT_LORAS = ("demo-lora-ink.safetensors", "demo-lora-neon.safetensors", "demo-lora-pencil.safetensors",
                 "demo-lora-watercolor.safetensors")
DEFAULT_UPSCALE_MODELS = ("demo-upscale-2x.pth",)
DEFAULT_VAES = ("demo-vae.safetensors",)

#: Upscale model names carry their factor by convention ("4x-UltraSharp.pth", "RealESRGAN_x4plus.pth"); a real
#: server reads it from the weights, the demo engine, which has none, from the name.
_FACTOR_BEFORE_X = re.compile(r"(?:^|[^0-9a-z])([1-8])x", re.IGNORECASE)
_FACTOR_AFTER_X = re.compile(r"(?:^|[^0-9a-z])x([1-8])(?![0-9])", re.IGNORECASE)


def upscale_factor(name: str) -> int | None:
    """The scale an upscale model's name announces (``demo-upscale-2x.pth`` → 2), or None when it names none."""
    found = _FACTOR_BEFORE_X.search(name) or _FACTOR_AFTER_X.search(name)
    return int(found.group(1)) if found else None


def name_list(text: str) -> tuple[str, ...]:
    """A comma-separated command-line list; empty entries are dropped, so ``--loras ""`` means none."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def upscale_model_list(text: str) -> tuple[str, ...]:
    """``--upscale-models``: every name must announce its factor, or the engine could not tell the output size."""
    names = name_list(text)
    for name in names:
        if upscale_factor(name) is None:
            raise argparse.ArgumentTypeError(
                f"cannot tell the scale of upscale model {name!r}: put it in the name, e.g. 'demo-upscale-2x.pth'")
    return names


@dataclass
class Faults:
    """Speed knobs and one-shot faults.

    ``step_delay`` / ``node_delay`` persist. The ``*_at_step`` faults are taken by the next run that starts
    (then cleared), and fire at that sampler step (1-based, like ComfyUI's ``progress.value``).
    ``reject_next_submit`` makes the next ``POST /prompt`` fail with ComfyUI's 500 text body, once.
    ``hang_next_submit`` queues the next prompt as usual but answers its ``POST /prompt`` only after that many
    seconds, once: the client sees a timeout for a prompt the server did queue.
    ``refuse_connections_for`` is an action, not a state: setting it closes the listening socket for that many
    seconds; reading it back gives the seconds still remaining (0 when listening).
    """

    step_delay: float = 0.1
    node_delay: float = 0.01
    fail_at_step: int | None = None
    drop_socket_at_step: int | None = None
    die_at_step: int | None = None
    refuse_connections_for: float = 0.0
    reject_next_submit: bool = False
    hang_next_submit: float = 0.0

    def update(self, values: dict[str, Any]) -> None:
        """Apply a JSON body of the same names; unknown names raise ``KeyError``, bad values ``ValueError``."""
        types = {f.name: f for f in fields(self)}
        for name, value in values.items():
            if name not in types:
                raise KeyError(name)
            if name in ("step_delay", "node_delay", "refuse_connections_for", "hang_next_submit"):
                value = max(0.0, float(value or 0))
            elif name == "reject_next_submit":
                value = bool(value)
            elif value is not None:
                value = int(value)
            setattr(self, name, value)

    def take_step_faults(self) -> "StepFaults":
        """Hand the one-shot step faults to the run that starts now, and clear them."""
        taken = StepFaults(self.fail_at_step, self.drop_socket_at_step, self.die_at_step)
        self.fail_at_step = self.drop_socket_at_step = self.die_at_step = None
        return taken

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepFaults:
    """The step faults one run carries; each fires at most once."""

    fail_at_step: int | None = None
    drop_socket_at_step: int | None = None
    die_at_step: int | None = None


@dataclass
class EngineOptions:
    """Everything :func:`generation.demo_engine.server.create_app` needs."""

    host: str = "127.0.0.1"
    port: int = 8189
    output_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="easel-demo-output-")))
    input_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="easel-demo-input-")))
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="easel-demo-temp-")))
    checkpoints: tuple[str, ...] = DEFAULT_CHECKPOINTS
    loras: tuple[str, ...] = DEFAULT_LORAS
    upscale_models: tuple[str, ...] = DEFAULT_UPSCALE_MODELS
    vaes: tuple[str, ...] = DEFAULT_VAES
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        # Resolved absolute paths: /view and /upload compare paths with os.path.commonpath, like ComfyUI.
        self.output_dir = Path(self.output_dir).resolve()
        self.input_dir = Path(self.input_dir).resolve()
        self.temp_dir = Path(self.temp_dir).resolve()
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # Sorted, like ComfyUI's folder_paths.get_filename_list.
        self.checkpoints = tuple(sorted(c for c in self.checkpoints if c))
        self.loras = tuple(sorted(name for name in self.loras if name))
        self.vaes = tuple(sorted(name for name in self.vaes if name))
        self.upscale_models = tuple(sorted(name for name in self.upscale_models if name))
        for name in self.upscale_models:
            if upscale_factor(name) is None:
                raise ValueError(f"cannot tell the scale of upscale model {name!r} from its name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.demo_engine",
        description="Easel demo engine: a ComfyUI-compatible server that draws placeholder pictures.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8189, help="0 picks a free port (printed on start)")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--input-dir", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--checkpoints", default=",".join(DEFAULT_CHECKPOINTS), help="comma-separated names")
    parser.add_argument("--loras", type=name_list, default=DEFAULT_LORAS,
                        help="comma-separated LoRA names (LoraLoader.lora_name, /models/loras); '' for none")
    parser.add_argument("--upscale-models", type=upscale_model_list, default=DEFAULT_UPSCALE_MODELS,
                        help="comma-separated upscale model names, each with its factor in the name (2x, x4); "
                             "'' for none")
    parser.add_argument("--vaes", type=name_list, default=DEFAULT_VAES,
                        help="comma-separated VAE names (VAELoader.vae_name, /models/vae); '' for none")
    defaults = Faults()
    parser.add_argument("--step-delay", type=float, default=defaults.step_delay, help="seconds per sampler step")
    parser.add_argument("--node-delay", type=float, default=defaults.node_delay, help="seconds per other node")
    parser.add_argument("--fail-at-step", type=int, default=None)
    parser.add_argument("--drop-socket-at-step", type=int, default=None)
    parser.add_argument("--die-at-step", type=int, default=None)
    parser.add_argument("--refuse-connections-for", type=float, default=0.0,
                        help="seconds to refuse connections right after start-up")
    parser.add_argument("--reject-next-submit", action="store_true")
    return parser


def options_from_args(args: argparse.Namespace) -> EngineOptions:
    faults = Faults(
        step_delay=args.step_delay,
        node_delay=args.node_delay,
        fail_at_step=args.fail_at_step,
        drop_socket_at_step=args.drop_socket_at_step,
        die_at_step=args.die_at_step,
        refuse_connections_for=args.refuse_connections_for,
        reject_next_submit=args.reject_next_submit,
    )
    kwargs: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "checkpoints": tuple(name.strip() for name in args.checkpoints.split(",")),
        "loras": args.loras,
        "upscale_models": args.upscale_models,
        "vaes": args.vaes,
        "faults": faults,
    }
    if args.output_dir is not None:
        kwargs["output_dir"] = args.output_dir
    if args.input_dir is not None:
        kwargs["input_dir"] = args.input_dir
    return EngineOptions(**kwargs)
