"""Inference back-ends. Each takes a float32 N x 3 x R x R batch and returns N x C probabilities.

- ``tensorrt``: a TensorRT engine built from the ONNX on this device (edge/backends/trt_backend.py);
- ``onnxruntime``: the ONNX itself, on ONNX Runtime's CUDA provider when it has one, else the CPU;
- ``torch``: the training checkpoint in torch (FP16 + CUDA graph on a GPU), for machines without
  TensorRT;
- ``auto``: TensorRT when it is installed and a GPU is present, else ONNX Runtime.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from edge.cli import ToolkitError

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")


class BackendError(ToolkitError, RuntimeError):
    """A model that cannot be loaded or run; the message says why in one line."""


class Backend:
    """Interface every back-end implements."""

    name: str = ""
    precision: str = ""
    device: str = ""
    model_file: str = ""
    resolution: int = 0
    max_batch: int = 1
    num_classes: int = 0
    metadata: Dict[str, str] = {}

    has_cam: bool = False  # the model also gives class activation maps (edge/heatmap.py)

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        """(probabilities ``N x C``,) or (probabilities, class activation maps ``N x C x h x w``)."""
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def close(self) -> None:
        """Release device memory; the object is unusable afterwards."""

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision}, max batch {self.max_batch})"


def auto_backend() -> str:
    """TensorRT when it imports and a GPU is present (importing is safe anywhere), else ONNX Runtime."""
    from edge.cuda_runtime import current_gpu
    from edge.tensorrt_api import TensorRTUnavailable, load_tensorrt
    try:
        load_tensorrt()
    except TensorRTUnavailable:
        return "onnxruntime"
    return "tensorrt" if current_gpu() is not None else "onnxruntime"


def open_backend(name: str, model: str, threads: int = 0, precision: Optional[str] = None,
                 batch_size: int = 1, build: bool = True) -> Backend:
    """Open ``model`` (a model dir or a file) with the named back-end."""
    if name not in BACKEND_CHOICES:
        raise BackendError(f"unknown back-end {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    if name == "auto":
        name = auto_backend()
    if name == "tensorrt":
        from edge.backends.trt_backend import TensorRTBackend
        return TensorRTBackend(model, precision or "fp16", batch_size, build)
    if name == "torch":
        from edge.backends.torch_backend import TorchBackend
        return TorchBackend(model, precision, batch_size)
    if precision not in (None, "fp32"):
        raise BackendError(f"ONNX Runtime runs the FP32 ONNX; --precision {precision} needs --backend tensorrt or torch")
    from edge.backends.ort_backend import OnnxRuntimeBackend
    from edge.model_files import resolve_model_file
    return OnnxRuntimeBackend(resolve_model_file(model), threads=threads, batch_size=batch_size)
