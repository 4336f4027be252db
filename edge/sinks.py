"""Where annotated images go: one file, or a folder that mirrors the input layout."""
from __future__ import annotations

import os
from typing import List, Optional

import cv2
import numpy as np

from edge.cli import ToolkitError
from edge.sources import InputImage, is_image_name

# Formats OpenCV writes everywhere; anything else (e.g. .jp2 without its codec) is saved as PNG.
_WRITABLE = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


class SinkError(ToolkitError, ValueError):
    """An OUTPUT that cannot take what the INPUT produces."""


class ImageSink:
    def __init__(self, output: Optional[str], images: List[InputImage]) -> None:
        self.output = output
        self.single_file = bool(output) and is_image_name(output) and not os.path.isdir(output)
        if self.single_file and len(images) > 1:
            raise SinkError(f"output {output} is one file but the input has {len(images)} images; "
                            "give a folder instead")
        if self.single_file and os.path.splitext(output)[1].lower() not in _WRITABLE:
            raise SinkError(f"cannot write {output}: use one of {', '.join(sorted(_WRITABLE))}")

    @property
    def enabled(self) -> bool:
        return bool(self.output)

    def path_for(self, image: InputImage) -> str:
        if self.single_file:
            return self.output
        stem, extension = os.path.splitext(image.relpath)
        if extension.lower() not in _WRITABLE:
            extension = ".png"
        return os.path.join(self.output, stem + extension)

    def write(self, image: InputImage, pixels: np.ndarray) -> str:
        path = self.path_for(image)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if not cv2.imwrite(path, pixels):
            raise OSError(f"could not write {path}")
        return path
