"""Expand the runner's INPUT (a file, a folder or a quoted glob) into the images to classify."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import List, Tuple

from edge.cli import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jp2"})


class SourceError(ToolkitError, ValueError):
    """An INPUT that names nothing usable."""


@dataclass(frozen=True)
class InputImage:
    path: str
    relpath: str  # where its annotated copy goes inside an output folder


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _has_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _walk_folder(folder: str) -> Tuple[List[InputImage], List[str]]:
    images, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if is_image_name(name):
                images.append(InputImage(path, os.path.relpath(path, folder)))
            else:
                skipped.append(path)
    return images, skipped


def expand_input(spec: str) -> Tuple[List[InputImage], List[str]]:
    """Images named by ``spec`` in a stable order, and the non-image files passed over.

    A single file is taken whatever its name (so a mislabelled file gets a clear decode error);
    folders are walked recursively and keep their layout in the output folder.
    """
    if os.path.isdir(spec):
        images, skipped = _walk_folder(spec)
    elif os.path.isfile(spec):
        images, skipped = [InputImage(spec, os.path.basename(spec))], []
    elif _has_glob(spec):
        matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches]) if matches else ""
        images = [InputImage(p, os.path.relpath(os.path.abspath(p), base)) for p in matches if is_image_name(p)]
        skipped = [p for p in matches if not is_image_name(p)]
    else:
        raise SourceError(f"input {spec} does not exist")
    if not images:
        raise SourceError(f"input {spec} contains no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images, skipped
