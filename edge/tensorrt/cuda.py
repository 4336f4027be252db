"""The few CUDA runtime calls the TensorRT back-end needs, through cuda-python or pycuda.

Every cuda-python call returns an error code first; ``check`` turns a failure into an exception
that names the error, the way NVIDIA's TensorRT samples do. Buffers are freed explicitly with
``close``. cuda-python (``cuda.bindings``) is preferred: it installs everywhere and fails cleanly
without a driver; pycuda is used where it is the one installed (older JetPack images).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from cxr_jetson.core.errors import ToolkitError


class CudaError(ToolkitError):
    """A CUDA call failed, or there is no GPU/driver to call."""


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str  # "8.7" on a Jetson AGX Orin

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability}


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6+ / 13
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


class CudaPythonRuntime:
    """Device/pinned buffers and one stream through ``cuda.bindings.runtime``."""

    name = "cuda-python"

    def __init__(self) -> None:
        self.cudart = _import_cudart()
        count = self.check(self.cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise CudaError("no CUDA GPU found")
        self.stream = self.check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._device: List[int] = []
        self._host: List[int] = []

    def check(self, result: Tuple[Any, ...], call: str) -> Any:
        error, values = result[0], result[1:]
        if error != self.cudart.cudaError_t.cudaSuccess:
            name = self.cudart.cudaGetErrorName(error)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            hint = " (no NVIDIA driver or GPU on this machine)" if "Driver" in name or "NoDevice" in name else ""
            raise CudaError(f"{call} failed: {name}{hint}")
        return values[0] if len(values) == 1 else values

    def identity(self) -> GpuIdentity:
        properties = self.check(self.cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
        return GpuIdentity(name.strip("\x00 "), f"{properties.major}.{properties.minor}")

    def device_buffer(self, nbytes: int) -> int:
        pointer = int(self.check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self._device.append(pointer)
        return pointer

    def pinned_array(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked host memory as a numpy array: copies to and from it can overlap with compute."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        pointer = int(self.check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host.append(pointer)
        buffer = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.cudart.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, self.stream),
                   "cudaMemcpyAsync (to device)")

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.cudart.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, self.stream),
                   "cudaMemcpyAsync (to host)")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def synchronize(self) -> None:
        self.check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for pointer in self._device:
            self.cudart.cudaFree(pointer)
        for pointer in self._host:
            self.cudart.cudaFreeHost(pointer)
        self._device, self._host = [], []
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class PyCudaRuntime:
    """The same operations through pycuda (its own context on device 0)."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as driver  # ImportError: not installed (or built without a driver)
        try:
            import pycuda.autoinit  # noqa: F401  (creates the context on device 0)
        except Exception as err:  # pycuda raises its own error types when there is no GPU
            raise CudaError(f"pycuda cannot initialise CUDA: {str(err).splitlines()[0]}") from None
        self.driver = driver
        self.stream = driver.Stream()
        self._device: List[Any] = []

    def identity(self) -> GpuIdentity:
        device = self.driver.Context.get_device()
        major, minor = device.compute_capability()
        return GpuIdentity(device.name(), f"{major}.{minor}")

    def device_buffer(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(nbytes)
        self._device.append(allocation)
        return int(allocation)

    def pinned_array(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.driver.pagelocked_empty(shape, dtype)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        self.driver.memcpy_htod_async(pointer, host, self.stream)

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        self.driver.memcpy_dtoh_async(host, pointer, self.stream)

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        for allocation in self._device:
            allocation.free()
        self._device = []


def open_cuda(preferred: Optional[str] = None):
    """A CUDA runtime from cuda-python, else pycuda; CudaError says why neither works."""
    reasons = []
    for runtime in (CudaPythonRuntime, PyCudaRuntime):
        if preferred and runtime.name != preferred:
            continue
        try:
            return runtime()
        except ImportError as err:
            reasons.append(f"{runtime.name} not installed ({err})")
        except CudaError as err:
            reasons.append(f"{runtime.name}: {err}")
    raise CudaError("CUDA is not usable here: " + "; ".join(reasons))


def current_gpu() -> Optional[GpuIdentity]:
    """The GPU this machine would run an engine on, or None without one (e.g. a CI machine)."""
    try:
        runtime = open_cuda()
    except CudaError:
        return None
    try:
        return runtime.identity()
    finally:
        runtime.close()
