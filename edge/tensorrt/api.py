"""Which TensorRT is installed, and what its version can do: the one place version differences live.

Three families are handled:
- TensorRT 8.x (JetPack 4.6: 8.2; JetPack 5: 8.5): weakly typed, ``BuilderFlag.FP16``; the
  name-based tensor API (``set_tensor_address``/``execute_async_v3``) from 8.5, bindings before;
- TensorRT 10.x (JetPack 6): weakly typed, ``BuilderFlag.FP16``, ``IProgressMonitor``;
- TensorRT 11 and TensorRT-RTX (``tensorrt_rtx``): strongly typed; an FP16 engine needs an FP16
  network (see edge/tensorrt/fp16_onnx.py). TensorRT-RTX also builds on a machine without a GPU when
  the target compute capabilities are named.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Optional, Tuple

from cxr_jetson.core.errors import ToolkitError

# Real TensorRT first: on a Jetson that is what runs the engine; TensorRT-RTX is the fallback that
# can build (not run) engines on any x86 machine.
_MODULES = ("tensorrt", "tensorrt_rtx")


class TensorRTUnavailable(ToolkitError):
    """No usable TensorRT Python module."""


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
    def has_name_based_io(self) -> bool:
        """``set_tensor_address``/``execute_async_v3`` (TensorRT 8.5+); bindings before that."""
        return hasattr(self.module.ICudaEngine, "num_io_tensors")

    @property
    def has_progress_monitor(self) -> bool:
        return hasattr(self.module, "IProgressMonitor")

    @property
    def has_int8_calibration(self) -> bool:
        """Implicit INT8 (a calibrator) exists up to TensorRT 10; 11 and RTX need Q/DQ networks."""
        return hasattr(self.module, "IInt8EntropyCalibrator2") and hasattr(self.module.BuilderFlag, "INT8")

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    def logger(self, severity: str = "warning"):
        levels = {"error": "ERROR", "warning": "WARNING", "info": "INFO", "verbose": "VERBOSE"}
        return self.module.Logger(getattr(self.module.Logger, levels[severity]))

    def create_network(self, builder):
        """An explicit-batch network (a flag before TensorRT 10, the only kind since)."""
        flags = 0
        creation = self.module.NetworkDefinitionCreationFlag
        if hasattr(creation, "EXPLICIT_BATCH") and self.version_tuple < (10,):
            flags = 1 << int(creation.EXPLICIT_BATCH)
        return builder.create_network(flags)

    def set_workspace(self, config, nbytes: int) -> None:
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(self.module.MemoryPoolType.WORKSPACE, nbytes)
        else:  # before TensorRT 8.4
            config.max_workspace_size = nbytes


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
        return TensorRT(module, name, getattr(module, "__version__", "0"))
    raise TensorRTUnavailable("TensorRT is not available (" + "; ".join(failures) + "); on a Jetson it comes with "
                              "JetPack (python3-libnvinfer), elsewhere use --backend onnxruntime")
