"""Inference back-ends. Each takes a float32 N x 3 x R x R batch and returns N x C probabilities."""
from __future__ import annotations

from typing import Dict

import numpy as np

from edge.cli import ToolkitError

BACKEND_CHOICES = ("auto", "onnxruntime")


class BackendError(ToolkitError, RuntimeError):
    """A model that cannot be loaded or run; the message says why in one line."""


class Backend:
    """Interface every back-end implements."""

    name: str = ""
    precision: str = ""
    device: str = ""
    resolution: int = 0
    max_batch: int = 1
    num_classes: int = 0
    metadata: Dict[str, str] = {}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision}, max batch {self.max_batch})"


def open_backend(name: str, model_path: str, threads: int = 0) -> Backend:
    """Open ``model_path`` with the named back-end; ``auto`` takes the best one installed."""
    if name not in BACKEND_CHOICES:
        raise BackendError(f"unknown back-end {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    from edge.backends.ort_backend import OnnxRuntimeBackend
    return OnnxRuntimeBackend(model_path, threads=threads)

