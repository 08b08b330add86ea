"""Static server descriptions: ``/system_stats``, ``/features`` and the model folder names.

The version strings are those of the ComfyUI release whose protocol the engine speaks (0.3.64), so clients that
gate features on ``comfyui_version`` behave as with the real server. The device entry says plainly that this is
the Easel demo engine.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

COMFYUI_VERSION = "0.3.64"
REQUIRED_FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.95"
MAX_UPLOAD_SIZE = 104857600

#: ``GET /models``: the folder names of a stock ComfyUI 0.3.64 (``checkpoints``, ``loras``, ``upscale_models`` and
#: ``vae`` have entries here).
MODEL_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "custom_nodes",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
)


def server_features() -> dict[str, Any]:
    """``GET /features`` and the ``feature_flags`` answer on the websocket."""
    return {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes from /proc/meminfo; zeros where that does not exist."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.strip()}
        return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        return 0, 0


def system_stats() -> dict[str, Any]:
    total, free = _memory()
    return {
        "system": {
            "os": os.name,
            "ram_total": total,
            "ram_free": free,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": REQUIRED_FRONTEND_VERSION,
            "installed_templates_version": TEMPLATES_VERSION,
            "required_templates_version": TEMPLATES_VERSION,
            "python_version": sys.version,
            "pytorch_version": f"none (Easel demo engine, {platform.python_implementation()})",
            "embedded_python": False,
            "argv": list(sys.argv),
        },
        "devices": [{
            "name": "Easel demo engine (placeholder images, no model)",
            "type": "cpu",
            "index": None,
            "vram_total": total,
            "vram_free": free,
            "torch_vram_total": total,
            "torch_vram_free": free,
        }],
    }
