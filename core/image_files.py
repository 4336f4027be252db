"""Which files are images, and the images a file, folder or quoted glob names, in a stable order.

The device runner, the data set tools, the training cache, export verification and INT8 calibration
all take their images through here, so they agree on what counts as one.
"""
from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

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


def special_file_kind(path: str) -> Optional[str]:
    """What an entry that is not a readable regular file is ("a named pipe", ...); None for a regular file.

    Reading a pipe can wait forever and a device never ends, so only regular files are read.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken or looping link" if os.path.islink(path) else "unreadable"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a folder" if stat.S_ISDIR(mode) else "a device"


def is_regular_file(path: str) -> bool:
    return special_file_kind(path) is None


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


def _walk_folder(folder: str, exclude: Optional[str]) -> Tuple[List[InputImage], List[str]]:
    images, skipped = [], []
    excluded = os.path.realpath(exclude) if exclude else None
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) != excluded)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if not is_regular_file(path):
                skipped.append(path)  # a named pipe called x.jpg would block the run forever
            elif is_image_name(name) or _is_dicom_without_extension(path):
                images.append(InputImage(path, os.path.relpath(path, folder)))
            else:
                skipped.append(path)
    return images, skipped


def expand_input(spec: str, exclude: Optional[str] = None) -> Tuple[List[InputImage], List[str]]:
    """Images named by ``spec`` in a stable order, and the non-image files passed over.

    A single file is taken whatever its name (so a mislabelled file gets a clear decode error);
    folders are walked recursively and keep their layout in the output folder. ``exclude`` is a folder
    left out of the walk: the runner's output folder, so what a run writes is never read back.
    """
    if os.path.isdir(spec):
        images, skipped = _walk_folder(spec, exclude)
    elif os.path.isfile(spec):  # a regular file (or a link to one)
        images, skipped = [InputImage(spec, os.path.basename(spec))], []
    elif os.path.exists(spec):
        raise InputError(f"input {spec} is {special_file_kind(spec)}, not a regular file: not read")
    elif _has_glob(spec):
        matches = sorted(p for p in glob.glob(spec, recursive=True) if is_regular_file(p))
        base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in matches]) if matches else ""
        images = [InputImage(p, os.path.relpath(os.path.abspath(p), base)) for p in matches if is_image_name(p)]
        skipped = [p for p in matches if not is_image_name(p)]
    else:
        raise InputError(f"input {spec} does not exist")
    if not images:
        raise InputError(f"input {spec} contains no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return images, skipped
