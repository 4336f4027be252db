"""Image folders decoded once per run into a uint8 cache at network resolution.

jetson-inference (torchvision ImageFolder) decodes and resizes every image again every epoch; on a
full-resolution X-ray that costs more than the network itself. Here each image goes through the
shared preprocessing (core/preprocess.py load_for_network) once, and epochs read the cached tensor.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from cxr_jetson.core.errors import ImageDecodeError, ToolkitError
from cxr_jetson.core.image_files import is_image_name, is_regular_file
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network


class DataError(ToolkitError):
    """A data folder that cannot be trained or evaluated on."""


def find_classes(split_dir: str) -> List[str]:
    """Class names in index order: the sorted sub-folder names (torchvision ImageFolder's rule)."""
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir} does not exist; expected DATA/{{train,val}}/<CLASS>/ "
                        "(python3 -m data.prepare makes this layout from the Kaggle download)")
    classes = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{split_dir} has {len(classes)} class folder(s); at least two are needed")
    return classes


def list_images(split_dir: str, classes: List[str]) -> List[Tuple[str, int]]:
    """(path, class index) for every image file under ``split_dir/<class>/``, in a stable order."""
    samples = []
    for index, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        found = []
        for root, dirs, files in os.walk(class_dir, followlinks=True):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files)
                         if is_image_name(f) and not f.startswith(".") and is_regular_file(os.path.join(root, f)))
        if not found:
            raise DataError(f"class folder {class_dir} has no images; every class needs examples "
                            "(an empty class is never learned)")
        samples.extend((path, index) for path in found)
    return samples


@dataclass
class CachedSplit:
    """A split decoded to uint8 ``N x R x R`` images with their labels."""

    name: str
    images: torch.Tensor          # uint8 [N, R, R]
    labels: torch.Tensor          # int64 [N]
    paths: List[str]
    failures: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self, num_classes: int) -> List[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


def _load(path: str, spec: PreprocessSpec) -> Optional[np.ndarray]:
    try:
        return load_for_network(path, spec)
    except ImageDecodeError:
        return None


def decode_images(paths: List[str], spec: PreprocessSpec, workers: int, description: str) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 ``N x R x R`` network-resolution images of ``paths`` and which of them could be read."""
    images = np.empty((len(paths), spec.resolution, spec.resolution), np.uint8)
    keep = np.ones(len(paths), bool)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = pool.map(lambda path: _load(path, spec), paths)
        for index, pixels in enumerate(tqdm(decoded, total=len(paths), unit="img", disable=None, desc=description)):
            if pixels is None:
                keep[index] = False
            else:
                images[index] = pixels
    return images, keep


def load_split(data_dir: str, split: str, classes: List[str], spec: PreprocessSpec, workers: int) -> CachedSplit:
    """Decode every image of ``data_dir/split`` once; unreadable files are listed, not fatal."""
    split_dir = os.path.join(data_dir, split)
    found = find_classes(split_dir)
    if found != classes:
        raise DataError(f"{split_dir} has classes {found} but training uses {classes}; "
                        "every split needs the same class folders")
    samples = list_images(split_dir, classes)
    images, keep = decode_images([path for path, _ in samples], spec, workers,
                                 f"decoding {split} once ({spec.resolution}px cache)")
    failures = [path for (path, _), ok in zip(samples, keep) if not ok]
    kept = [sample for sample, ok in zip(samples, keep) if ok]
    if not kept:
        raise DataError(f"no readable images in {split_dir}")
    return CachedSplit(split, torch.from_numpy(images[keep]), torch.tensor([label for _, label in kept]),
                       [path for path, _ in kept], failures)
