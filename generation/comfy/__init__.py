"""ComfyUI client library for Easel: plain Python, no Django, so it can be reused and
tested on its own. Protocol notes: docs/comfyui.md (ComfyUI 0.3.64)."""

from .client import (
    ComfyClient,
    ComfyError,
    ComfyNotFound,
    ComfyPromptRejected,
    ComfyProtocolError,
    ComfySocket,
    ComfySocketClosed,
    ComfyUnreachable,
    combo_options,
)
from .errors import Message, describe_execution_error, describe_rejection, is_transient
from .events import Event, Preview, TextFrame, parse_binary, parse_text
from .tracker import PromptTracker
from .workflow import BindingError, bypass, is_link, output_nodes, render_workflow, validate_bindings

__all__ = [
    "BindingError",
    "bypass",
    "ComfyClient",
    "ComfyError",
    "ComfyNotFound",
    "ComfyPromptRejected",
    "ComfyProtocolError",
    "ComfySocket",
    "ComfySocketClosed",
    "ComfyUnreachable",
    "Event",
    "Message",
    "Preview",
    "PromptTracker",
    "TextFrame",
    "combo_options",
    "describe_execution_error",
    "describe_rejection",
    "is_link",
    "is_transient",
    "output_nodes",
    "parse_binary",
    "parse_text",
    "render_workflow",
    "validate_bindings",
]
