"""Easel's built-in demo engine: a small ComfyUI-compatible server that draws placeholder pictures.

It speaks the subset of the ComfyUI 0.3.64 HTTP/WebSocket protocol that Easel uses (field for field, checked
against captures of a real server), so the Easel client runs unchanged against it in development, demos and
tests. Nothing it draws is AI output: every picture says "DEMO" and shows the prompt.

Entry points: :func:`main` (command line, also ``python -m generation.demo_engine``) and :func:`create_app`
(in-process aiohttp application).
"""

from .options import EngineOptions, Faults
from .server import create_app, main

__all__ = ["EngineOptions", "Faults", "create_app", "main"]
