"""Inference back-ends: a table of names, one class each over one interface (``Backend``).

- ``tensorrt``: a TensorRT engine built from the ONNX on this device (trt_backend.py);
- ``onnxruntime``: the ONNX itself, on ONNX Runtime's CUDA provider when it has one, else the CPU;
- ``torch``: the training checkpoint in torch (FP16 + CUDA graph on a GPU), for machines without
  TensorRT;
- ``auto``: TensorRT when it is installed and a GPU is present, else ONNX Runtime.
Each takes a float32 ``N x 3 x R x R`` batch and returns ``N x C`` probabilities (and class
activation maps when the model has them), and reports what the model says about itself as a typed
ModelInfo. A new back-end is one module with one class and one entry in ``BACKENDS``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import INPUT_NAME, OUTPUT_NAME


class BackendError(ToolkitError, RuntimeError):
    """A model that cannot be loaded or run; the message says why in one line."""


@dataclass(frozen=True)
class BackendOptions:
    precision: Optional[str] = None  # None: the back-end's default
    threads: int = 0                 # CPU threads (0: the back-end's default)
    batch_size: int = 1              # the largest batch the runner will pass
    build: bool = True               # TensorRT: build an engine when none matches the model


class Backend:
    """Interface every back-end implements; the constructor takes (model path, BackendOptions)."""

    name: str = ""
    precision: str = ""
    device: str = ""
    model_file: str = ""
    resolution: int = 0
    max_batch: int = 1
    num_classes: int = 0
    input_name: str = INPUT_NAME     # the tensors it feeds and reads (jetson-inference's --input_blob/--output_blob)
    output_name: str = OUTPUT_NAME
    info: ModelInfo = ModelInfo()    # what the model records about itself (empty for a plain export)
    has_cam: bool = False            # the model also gives class activation maps (edge/heatmap.py)
    has_gate: bool = False           # the model also gives the input gate's scores (core/input_gate.py), last

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        """(probabilities ``N x C``,) then, when the model has them, class activation maps ``N x C x h x w``,
        then the input gate's scores ``N x G``."""
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def close(self) -> None:
        """Release device memory; the object is unusable afterwards."""

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision}, max batch {self.max_batch})"


# name -> (module, class), imported on first use: each needs its own optional runtime.
BACKENDS: Dict[str, Tuple[str, str]] = {
    "tensorrt": ("cxr_jetson.edge.backends.trt_backend", "TensorRTBackend"),
    "onnxruntime": ("cxr_jetson.edge.backends.ort_backend", "OnnxRuntimeBackend"),
    "torch": ("cxr_jetson.edge.backends.torch_backend", "TorchBackend"),
}
BACKEND_CHOICES = ("auto",) + tuple(BACKENDS)


def auto_backend() -> str:
    """TensorRT when a GPU is present and TensorRT imports (importing is safe anywhere), else ONNX Runtime."""
    from cxr_jetson.edge.tensorrt.api import TensorRTUnavailable, load_tensorrt
    from cxr_jetson.edge.tensorrt.cuda import current_gpu
    # The GPU first: without a driver that answer takes a millisecond, where loading TensorRT's libraries
    # took 0.37 s, a third of the runner's start-up on a machine with TensorRT for building but no GPU.
    if current_gpu() is None:
        return "onnxruntime"
    try:
        load_tensorrt()
    except TensorRTUnavailable:
        return "onnxruntime"
    return "tensorrt"


def open_backend(name: str, model: str, options: BackendOptions = BackendOptions()) -> Backend:
    """Open ``model`` (a model dir or a file) with the named back-end."""
    if name not in BACKEND_CHOICES:
        raise BackendError(f"unknown back-end {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    module, cls = BACKENDS[auto_backend() if name == "auto" else name]
    return getattr(importlib.import_module(module), cls)(model, options)
