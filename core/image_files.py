"""Which files are images, and the images a file, folder or quoted glob names, in a stable order.

The device runner, the data set tools, the training cache, export verification and INT8 calibration
all take their images through here, so they agree on what counts as one.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import List, Tuple

from cxr_jetson.core.decode import is_dicom
from cxr_jetson.core.errors import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp",
                              ".pgm", ".ppm", ".pbm", ".jp2", ".dcm"})


class InputError(ToolkitError, ValueError):
    """An input that names nothing usable."""


@dataclass(frozen=True)
class InputImage:
    path: str
    relpath: str  # where its annotated copy goes inside an output folder


def is_image_name(path: str) -> bool:
    """Whether a file name says image (or DICOM); a folder walk takes these and passes over the rest."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _is_dicom_without_extension(path: str) -> bool:
    if os.path.splitext(path)[1]:
        return False
    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(132))
    except OSError:
        return False


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
            if is_image_name(name) or _is_dicom_without_extension(path):
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
        raise InputError(f"input {spec} does not exist")
    if not images:
        raise InputError(f"input {spec} contains no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images, skipped
