"""The one preprocessing definition shared by training-time evaluation and every inference back-end.

An image becomes network input in three steps, each a function here:

1. ``read_grey``/``decode_grey`` (core/decode.py): file -> 2-D grey array, JPEGs decoded at reduced
   scale when they are much larger than the network input;
2. ``resize_to_network``: grey array -> uint8 ``R x R`` image. The whole frame is stretched (no centre
   crop: an X-ray must not lose lung fields; jetson-inference stretches the whole frame too).
   High-bit-depth pixels are windowed to their own min..max first. Then, when the spec asks for it,
   the ``R x R`` image is equalised (``equalize``): global histogram equalisation or CLAHE maps
   every image's grey levels onto the same spread, which removes much of the exposure, contrast and
   processing difference between X-ray machines and sites;
3. ``normalize``: uint8 ``N x R x R`` -> float32 ``N x 3 x R x R``, grey replicated to RGB and
   normalised with ImageNet mean/std, so ImageNet weights and jetson-inference's imagenet.py apply.

The training cache stores the output of step 2, so training, export verification and the device
all see the same pixels.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import cv2
import numpy as np

from cxr_jetson.core.decode import decode_grey, read_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
EQUALIZATIONS = ("none", "hist", "clahe")
# CLAHE at network resolution: 8x8 tiles (28 px at 224) and OpenCV's customary clip limit.
_CLAHE_CLIP_LIMIT = 2.0
_CLAHE_TILES = (8, 8)


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that decides the network input; saved in checkpoints and ONNX metadata."""

    resolution: int = 224
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "area"
    # JPEGs may be DCT-decoded at 1/2, 1/4 or 1/8 scale while the short side stays at least this
    # many times the network resolution (0: decoded in full, as jetson-inference's loadImage does). At
    # 2x the network input differs from a full decode's by under 0.5 grey levels on average for 23 of
    # 24 real full-resolution X-rays (1.55 on the worst) and the probability by at most 3.2e-3
    # (bench/classify_images.py). Earlier models record 2; 0 is the default now because
    # libjpeg-turbo spends most of a decode in entropy decoding, which scaling does not shorten: on
    # those 24 X-rays a half-scale decode took 6.2 ms against 6.4 for a full one, and the runner then
    # decoded every image twice, once for the network and once for the full-size picture.
    jpeg_reduce_min_ratio: int = 0
    channels: str = "grey->rgb"
    version: int = 1
    # Applied to the R x R image. "none" is what a spec written before this field existed means, and
    # such a spec is saved without the field so older toolkits still read it.
    equalize: str = "none"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {sorted(_INTERPOLATIONS)}")
        if self.equalize not in EQUALIZATIONS:
            raise ValueError(f"unknown equalization {self.equalize!r}; choose from {', '.join(EQUALIZATIONS)}")
        if self.resolution < 32:
            raise ValueError(f"resolution {self.resolution} is too small (minimum 32)")

    @property
    def decode_min_side(self) -> int:
        return self.resolution * self.jpeg_reduce_min_ratio

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        if self.equalize == "none":
            del data["equalize"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PreprocessSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"preprocessing spec has fields this version does not know: {unknown}; "
                             "upgrade the toolkit on this machine")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def window_to_uint8(grey: np.ndarray) -> np.ndarray:
    """8-bit passes through; deeper images are stretched from their own min..max to 0..255."""
    if grey.dtype == np.uint8:
        return grey
    lo, hi = float(grey.min()), float(grey.max())
    if hi <= lo:
        return np.zeros(grey.shape, np.uint8)
    scaled = (grey.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def resize_to_network(grey: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Grey image of any size and depth -> uint8 ``R x R`` (whole frame, aspect not kept), equalised
    when the spec says so."""
    size = (spec.resolution, spec.resolution)
    return equalize(cv2.resize(window_to_uint8(grey), size, interpolation=_INTERPOLATIONS[spec.interpolation]), spec)


def equalize(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 ``R x R`` -> the same, equalised as ``spec.equalize`` says (a copy-free pass for "none")."""
    if spec.equalize == "hist":
        return cv2.equalizeHist(image)
    if spec.equalize == "clahe":
        return cv2.createCLAHE(clipLimit=_CLAHE_CLIP_LIMIT, tileGridSize=_CLAHE_TILES).apply(image)
    return image


def load_for_network(path: str, spec: PreprocessSpec) -> np.ndarray:
    """Image file -> uint8 ``R x R``: steps 1 and 2 above. Raises ImageDecodeError on bad files."""
    return image_bytes_for_network(read_bytes(path), spec, name=path)


def image_bytes_for_network(data: bytes, spec: PreprocessSpec, name: str = "<bytes>") -> np.ndarray:
    return resize_to_network(decode_grey(data, name, spec.decode_min_side), spec)


def normalize(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 ``R x R`` or ``N x R x R`` -> float32 ``N x 3 x R x R`` network input."""
    batch = images[None] if images.ndim == 2 else images
    scaled = batch.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((scaled[:, None, :, :] - mean) / std)
