"""File-system rules shared by the nodes and the HTTP handlers, following ComfyUI's ``folder_paths``.

Kept in one place because the same path checks guard ``/view``, ``/upload/image``, ``LoadImage`` and
``SaveImage``: a client must never read or write outside the engine's input/output/temp folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from .options import EngineOptions

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class UnsafePathError(Exception):
    """A prefix or subfolder that would leave the engine's folders."""


def directory_for_type(options: EngineOptions, kind: str | None) -> Path | None:
    """``type`` → base folder (``output`` is the default for /view, ``input`` for uploads); ``None`` if unknown."""
    return {"output": options.output_dir, "input": options.input_dir, "temp": options.temp_dir}.get(kind or "")


def annotated_filepath(options: EngineOptions, name: str) -> tuple[str, Path | None]:
    """Strip a trailing `` [output]`` / `` [input]`` / `` [temp]`` annotation, returning the folder it names."""
    for suffix, folder in ((" [output]", options.output_dir), (" [input]", options.input_dir),
                           (" [temp]", options.temp_dir)):
        # ComfyUI checks the bracket part only and cuts one extra character (the space) off.
        if name.endswith(suffix[1:]):
            return name[: -len(suffix)], folder
    return name, None


def input_image_path(options: EngineOptions, name: str) -> Path:
    """Where LoadImage reads ``name`` from (``sub/name.png`` and annotated names allowed)."""
    name, folder = annotated_filepath(options, name)
    return (folder or options.input_dir) / name


def input_image_exists(options: EngineOptions, name: str) -> bool:
    """LoadImage validation: only existence is checked, exactly like ComfyUI (content is checked at run time)."""
    return input_image_path(options, name).exists()


def list_input_images(options: EngineOptions) -> list[str]:
    """The LoadImage combo list: image files at the top of the input folder, sorted."""
    names = [entry.name for entry in options.input_dir.iterdir()
             if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(names)


def list_input_files(options: EngineOptions) -> list[str]:
    """The LoadImageMask combo list: every file at the top of the input folder, sorted. Unlike LoadImage, ComfyUI
    does not filter this one by content type."""
    return sorted(entry.name for entry in options.input_dir.iterdir() if entry.is_file())


def is_within(base: Path, candidate: str | os.PathLike[str]) -> bool:
    """ComfyUI's ``os.path.commonpath((abspath(candidate), base)) == base`` containment test."""
    try:
        return os.path.commonpath((os.path.abspath(candidate), str(base))) == str(base)
    except ValueError:  # different drives on Windows
        return False


def next_save_path(base: Path, filename_prefix: str) -> tuple[Path, str, int, str]:
    """ComfyUI's ``get_save_image_path``: (folder, file stem, first free counter, subfolder).

    The counter is one more than the highest ``{stem}_{NNNNN}_`` already in the folder, so files are never
    overwritten and numbering survives restarts.
    """
    normalised = os.path.normpath(filename_prefix)
    subfolder = os.path.dirname(normalised)
    stem = os.path.basename(normalised)
    folder = base / subfolder
    if not is_within(base, folder):
        raise UnsafePathError(
            "**** ERROR: Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {os.path.abspath(folder)}\n output_dir: {base}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    highest = 0
    for entry in os.listdir(folder):
        # Matches "{stem}_{digits}_..." (ComfyUI's map_filename): the stem, "_", digits, "_".
        if not entry.startswith(stem + "_"):
            continue
        digits = entry[len(stem) + 1:].split("_")[0]
        if digits.isdigit() and entry[len(stem) + 1 + len(digits):].startswith("_"):
            highest = max(highest, int(digits))
    return folder, stem, highest + 1, subfolder
