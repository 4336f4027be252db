"""Shift proxies: validation images degraded the way another site's X-rays differ from this one's.

A held-out slice of the training hospital's images says little about new hospitals: the official
test split of the Kermany data set is shifted, and a model near-perfect on validation loses much of
its specificity there. These proxies are built from validation images alone (the test split is never
looked at): each degrades the resized image *before* the model's own equalisation, as a different
X-ray machine, exposure or processing chain would, and the metrics on them show how much a recipe,
its checkpoint choice and its threshold depend on the training site's look.

- ``contrast``: grey levels squeezed to 55% of their spread around the mean, shifted by up to 25 levels;
- ``gamma``: a gamma of 0.5-0.7 or 1.5-2.0 (brighter or darker mid-tones, as another detector curve);
- ``noise``: Gaussian noise of 10 grey levels (a lower dose, a noisier detector);
- ``resolution``: the image at a third of the network resolution, scaled back up (a blurrier system);
- ``mixed``: each image gets one of the four at random; training picks the threshold on validation
  plus this one.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

from cxr_jetson.core.preprocess import PreprocessSpec, equalize
from cxr_jetson.train.dataset import CachedSplit, load_split


def _contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = float(image.mean())
    return (image.astype(np.float32) - mean) * 0.55 + mean + rng.uniform(-25, 25)


def _gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma = rng.uniform(0.5, 0.7) if rng.random() < 0.5 else rng.uniform(1.5, 2.0)
    return 255.0 * (image.astype(np.float32) / 255.0) ** gamma


def _noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return image.astype(np.float32) + rng.normal(0.0, 10.0, image.shape)


def _resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = image.shape[0]
    small = cv2.resize(image, (side // 3, side // 3), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)


DEGRADATIONS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "contrast": _contrast, "gamma": _gamma, "noise": _noise, "resolution": _resolution}
PROXIES = tuple(DEGRADATIONS) + ("mixed",)
TRAINING_PROXY = "mixed"


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def degrade(images: np.ndarray, proxy: str, seed: int = 0) -> np.ndarray:
    """uint8 ``N x R x R`` network-resolution images (not yet equalised) -> their ``proxy`` copies."""
    if proxy not in PROXIES:
        raise ValueError(f"unknown shift proxy {proxy!r}; choose from {', '.join(PROXIES)}")
    rng = np.random.default_rng(seed)
    names = list(DEGRADATIONS)
    out = np.empty_like(images)
    for index, image in enumerate(images):
        name = names[rng.integers(len(names))] if proxy == "mixed" else proxy
        out[index] = _to_uint8(DEGRADATIONS[name](image, rng))
    return out


def _equalized(split: CachedSplit, pixels: np.ndarray, spec: PreprocessSpec, name: str) -> CachedSplit:
    images = np.stack([equalize(image, spec) for image in pixels]) if len(pixels) else pixels
    return CachedSplit(name, torch.from_numpy(images), split.labels, split.paths, split.failures)


def load_with_proxies(data_dir: str, split: str, classes: List[str], spec: PreprocessSpec, workers: int,
                      proxies: tuple = PROXIES) -> Dict[str, CachedSplit]:
    """``split`` decoded once, as the model sees it (key ``split``) and as each proxy (``split~proxy``)."""
    raw = load_split(data_dir, split, classes, replace(spec, equalize="none"), workers)
    pixels = raw.images.numpy()
    splits = {split: _equalized(raw, pixels, spec, split)}
    for offset, proxy in enumerate(proxies):
        name = f"{split}~{proxy}"
        splits[name] = _equalized(raw, degrade(pixels, proxy, seed=offset), spec, name)
    return splits
