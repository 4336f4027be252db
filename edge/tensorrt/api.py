"""Which TensorRT is installed, and what its version can do: the one place version differences live.

Supported: TensorRT 8.5 (JetPack 5.1.x: 8.5.2), 8.6, 10.x (JetPack 6.1/6.2: 10.3), 11 and TensorRT-RTX.
- 8.5 and 8.6: weakly typed (``BuilderFlag.FP16``, ``BuilderFlag.INT8``); explicit-batch networks need
  their creation flag; no ``IProgressMonitor`` and no ``MemoryPoolType.TACTIC_SHARED_MEMORY`` (both
  arrived in 10.0);
- 10.x: weakly typed, ``IProgressMonitor``;
- 11 and TensorRT-RTX (``tensorrt_rtx``): strongly typed; an FP16 engine needs an FP16 network (see
  edge/tensorrt/fp16_onnx.py). TensorRT-RTX also builds on a machine without a GPU when the target
  compute capabilities are named.
INT8 is a quantized (Q/DQ) ONNX in every version: TensorRT has parsed Q/DQ since 8.0, so the implicit
INT8 calibrator (deprecated in 10.1, gone in 11 and RTX) is not used anywhere.
Every member the code touches is checked against each version's recorded API in
tests/test_tensorrt_versions.py; the ones a version lacks are reached only through a guard here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Tuple

import numpy as np

from cxr_jetson.core.errors import ToolkitError

# Real TensorRT first: on a Jetson that is what runs the engine; TensorRT-RTX is the fallback that
# can build (not run) engines on any x86 machine.
_MODULES = ("tensorrt", "tensorrt_rtx")
# The oldest TensorRT the code supports: JetPack 5.1's. Older ones lack the name-based tensor API.
MINIMUM_TENSORRT = (8, 5)

# TensorRT's own ``nptype`` is not used: 8.5.2's maps BOOL to ``np.bool``, which numpy 1.24 removed
# (fixed in 8.5.3, and no JetPack 5 has that), so the first inference crashed. DataType names are
# the same in every version.
_NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "BOOL": np.bool_, "UINT8": np.uint8}


class TensorRTUnavailable(ToolkitError):
    """No usable TensorRT Python module."""


class TensorRTVersionError(ToolkitError):
    """A feature the installed TensorRT does not have."""


def numpy_dtype(data_type: Any) -> np.dtype:
    """A TensorRT DataType -> the numpy dtype of its host buffer."""
    name = getattr(data_type, "name", str(data_type).rsplit(".", 1)[-1])
    if name not in _NUMPY_TYPES:
        raise TensorRTVersionError(f"TensorRT tensor type {name} has no numpy equivalent; "
                                   "this toolkit's engines take and give float32")
    return np.dtype(_NUMPY_TYPES[name])


@dataclass(frozen=True)
class TensorRT:
    module: ModuleType
    flavor: str          # "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def version_tuple(self) -> Tuple[int, ...]:
        return tuple(int(part) for part in self.version.split(".")[:3] if part.isdigit())

    @property
    def is_rtx(self) -> bool:
        return self.flavor == "tensorrt_rtx"

    @property
    def strongly_typed(self) -> bool:
        """Precision comes from the network's types, not from builder flags (TensorRT 11, RTX)."""
        return self.is_rtx or not hasattr(self.module.BuilderFlag, "FP16")

    @property
    def has_progress_monitor(self) -> bool:
        """``IProgressMonitor`` (TensorRT 10+); 8.x builds show elapsed time instead."""
        return hasattr(self.module, "IProgressMonitor")

    @property
    def has_tactic_shared_memory(self) -> bool:
        """``MemoryPoolType.TACTIC_SHARED_MEMORY`` (TensorRT 10+)."""
        return hasattr(self.module.MemoryPoolType, "TACTIC_SHARED_MEMORY")

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """Before TensorRT 10 a network is implicit-batch unless created with EXPLICIT_BATCH (gone in 11)."""
        return self.version_tuple < (10,) and hasattr(self.module.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    def require(self, feature: str, available: bool, since: str) -> None:
        """A one-line error when the code is asked for something this version does not have."""
        if not available:
            raise TensorRTVersionError(f"{feature} needs {since}; this is {self.label}")

    def logger(self, severity: str = "warning"):
        levels = {"error": "ERROR", "warning": "WARNING", "info": "INFO", "verbose": "VERBOSE"}
        return self.module.Logger(getattr(self.module.Logger, levels[severity]))

    def create_network(self, builder):
        """An explicit-batch network (a flag before TensorRT 10, the only kind since)."""
        flags = 0
        if self.needs_explicit_batch_flag:
            flags = 1 << int(self.module.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return builder.create_network(flags)

    def set_workspace(self, config, nbytes: int) -> None:
        config.set_memory_pool_limit(self.module.MemoryPoolType.WORKSPACE, nbytes)

    def set_tactic_shared_memory(self, config, nbytes: int) -> None:
        self.require("--tactic-shared-memory", self.has_tactic_shared_memory, "TensorRT 10 or newer")
        config.set_memory_pool_limit(self.module.MemoryPoolType.TACTIC_SHARED_MEMORY, nbytes)


def load_tensorrt(preferred: Optional[str] = None) -> TensorRT:
    """The installed TensorRT module (``preferred`` names one); a one-line error when there is none."""
    names = (preferred,) if preferred else _MODULES
    failures = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # a wheel without its libraries fails here too
            failures.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        found = TensorRT(module, name, getattr(module, "__version__", "0"))
        if not found.is_rtx and found.version_tuple < MINIMUM_TENSORRT:
            raise TensorRTUnavailable(f"TensorRT {found.version} is too old: this toolkit needs TensorRT 8.5 or newer "
                                      "(JetPack 5.1 or later; JetPack 4.x and 5.0 are not supported)")
        return found
    raise TensorRTUnavailable("TensorRT is not available (" + "; ".join(failures) + "); on a Jetson it comes with "
                              "JetPack (python3-libnvinfer), elsewhere use --backend onnxruntime")
