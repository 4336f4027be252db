"""The GPU check's data set (bench/gpu_check.py): finding one whose images open, refusing links whose targets
did not travel, staging a carry-ready copy of it (--stage) and the small linked subset of a --smoke run."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional

from cxr_jetson.core.errors import ToolkitError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGED = os.path.join("data", "gpu_check")
DATA_CANDIDATES = (STAGED, os.path.join("data", "pneumonia"))
SMOKE_PER_CLASS = {"train": 60, "val": 40}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _images(folder: str) -> List[str]:
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES))


def _class_folders(data: str, split: str) -> List[str]:
    root = os.path.join(data, split)
    return sorted(os.path.join(root, name) for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))


def readable_data(data: str) -> Optional[str]:
    """Why ``data`` cannot be trained on (no train/val classes, or images that are dangling links), or None."""
    try:
        folders = _class_folders(data, "train") + _class_folders(data, "val")
    except OSError as err:
        return f"{data}: {err.strerror}"
    if not folders:
        return f"{data}: no train/<CLASS> or val/<CLASS> folders"
    for folder in folders:
        images = _images(folder)
        if not images:
            return f"{folder}: no images"
        if not os.path.isfile(images[0]):  # a link whose target stayed behind (the carry sends links as links)
            return (f"{images[0]} is a link to {os.path.realpath(images[0])}, which is not here: stage the data "
                    f"with 'bash bench/gpu_check.sh --stage' and carry {STAGED}")
    return None


def choose_data(requested: str) -> str:
    """--data, else the first candidate whose images open; ToolkitError naming why each one cannot be used."""
    candidates = [requested] if requested else [os.path.join(REPO, path) for path in DATA_CANDIDATES]
    reasons = [readable_data(path) for path in candidates]
    for path, reason in zip(candidates, reasons):
        if reason is None:
            return path
    raise ToolkitError("no data set to train on: " + "; ".join(reasons))


def stage_data(source: str, target: str) -> Dict[str, int]:
    """Copy ``source``'s train and val images, links followed, to ``target``: what the device tool can carry."""
    if os.path.exists(target):
        raise ToolkitError(f"{target} exists: remove it first to stage again")
    counts = {}
    for split in ("train", "val"):
        shutil.copytree(os.path.join(source, split), os.path.join(target, split), symlinks=False)
        counts[split] = sum(len(_images(folder)) for folder in _class_folders(target, split))
    labels = os.path.join(source, "labels.txt")
    if os.path.isfile(labels):
        shutil.copy(labels, target)
    return counts


def smoke_subset(data: str, target: str) -> str:
    """A few images per class and split of ``data``, evenly spaced through the sorted names (so both normal
    series stay in), as symlinks under ``target``."""
    for split, per_class in SMOKE_PER_CLASS.items():
        for folder in _class_folders(data, split):
            images = _images(folder)
            chosen = images[::max(1, len(images) // per_class)][:per_class]
            destination = os.path.join(target, split, os.path.basename(folder))
            os.makedirs(destination, exist_ok=True)
            for path in chosen:
                os.symlink(os.path.realpath(path), os.path.join(destination, os.path.basename(path)))
    return target


def stage(source: str) -> int:
    """--stage: the carry-ready copy of the data set, and the device call that carries it."""
    problem = readable_data(source)
    if problem:
        raise ToolkitError(problem)
    counts = stage_data(source, os.path.join(REPO, STAGED))
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(os.path.join(REPO, STAGED))
               for name in names)
    print(f"staged {counts['train']} train and {counts['val']} val images of {source} in {STAGED} "
          f"({size / 2 ** 20:.1f} MiB); on the device machine:\n"
          f'    run(command="bash bench/gpu_check.sh", carry=["{STAGED}"], timeout_s=540)')
    return 0
