"""The few CUDA runtime calls the TensorRT back-end needs: through cuda-python, the machine's own
CUDA runtime library, or pycuda, whichever works first.

Every call returns an error code; ``check`` turns a failure into an exception that names the error,
the way NVIDIA's TensorRT samples do. Buffers are freed explicitly with ``close``. cuda-python
(``cuda.bindings``) is tried first: it fails cleanly without a driver. A cuda-python built for a newer
CUDA than the driver's (``cuda-python<13`` resolves to 12.9 on JetPack 6.1's CUDA 12.6 driver) fails
with cudaErrorInsufficientDriver; the machine's own libcudart (JetPack's, the one TensorRT links
against) always matches its driver, so it comes next, through ctypes. pycuda is last (older images).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import sys
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


def _error_message(call: str, name: str) -> str:
    hint = " (no NVIDIA driver or GPU on this machine)" if "Driver" in name or "NoDevice" in name else ""
    return f"{call} failed: {name}{hint}"


class _RuntimeBuffers:
    """What the runtimes over the CUDA runtime API (``api``: cuda-python's module or the ctypes library)
    share: synchronising their stream, and the buffers they allocated, all released by close().
    A subclass makes the calls and defines ``check`` for its way of returning errors."""

    api: Any = None
    stream: Any = None

    def __init__(self) -> None:
        self._device: List[int] = []
        self._host: List[int] = []

    def _device_pointer(self, pointer: int) -> int:
        self._device.append(pointer)
        return pointer

    def _host_array(self, pointer: int, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked host memory as a numpy array: copies to and from it can overlap with compute."""
        self._host.append(pointer)
        buffer = (ctypes.c_byte * (int(np.prod(shape)) * dtype.itemsize)).from_address(pointer)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    def synchronize(self) -> None:
        self.check(self.api.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for pointer in self._device:
            self.api.cudaFree(pointer)
        for pointer in self._host:
            self.api.cudaFreeHost(pointer)
        self._device, self._host = [], []
        if self.stream is not None:
            self.api.cudaStreamDestroy(self.stream)
            self.stream = None


class CudaPythonRuntime(_RuntimeBuffers):
    """Device/pinned buffers and one stream through ``cuda.bindings.runtime``."""

    name = "cuda-python"

    def __init__(self) -> None:
        super().__init__()
        self.api = _import_cudart()
        count = self.check(self.api.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise CudaError("no CUDA GPU found")
        self.stream = self.check(self.api.cudaStreamCreate(), "cudaStreamCreate")

    def check(self, result: Tuple[Any, ...], call: str) -> Any:
        error, values = result[0], result[1:]
        if error != self.api.cudaError_t.cudaSuccess:
            name = self.api.cudaGetErrorName(error)[1]
            raise CudaError(_error_message(call, name.decode() if isinstance(name, bytes) else str(name)))
        return values[0] if len(values) == 1 else values

    def identity(self) -> GpuIdentity:
        properties = self.check(self.api.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
        return GpuIdentity(name.strip("\x00 "), f"{properties.major}.{properties.minor}")

    def device_buffer(self, nbytes: int) -> int:
        return self._device_pointer(int(self.check(self.api.cudaMalloc(nbytes), "cudaMalloc")))

    def pinned_array(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return self._host_array(int(self.check(self.api.cudaMallocHost(nbytes), "cudaMallocHost")), shape, dtype)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        kind = self.api.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.api.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, self.stream),
                   "cudaMemcpyAsync (to device)")

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        kind = self.api.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.api.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, self.stream),
                   "cudaMemcpyAsync (to host)")

    @property
    def stream_handle(self) -> int:
        return int(self.stream)



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


def _find_libcudart() -> str:
    """The machine's CUDA runtime library (JetPack puts it in /usr/local/cuda; ldconfig knows it)."""
    found = ctypes.util.find_library("cudart")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda/lib64/libcudart.so*") +
                        glob.glob("/usr/local/cuda/targets/*/lib/libcudart.so*"))
    if not candidates:
        raise ImportError("no libcudart on this machine")
    return candidates[0]


class SystemCudaRuntime(_RuntimeBuffers):
    """The same operations through the machine's own libcudart, called with ctypes."""

    name = "libcudart"
    _HOST_TO_DEVICE, _DEVICE_TO_HOST = 1, 2            # cudaMemcpyKind
    _COMPUTE_MAJOR, _COMPUTE_MINOR = 75, 76            # cudaDevAttrComputeCapabilityMajor/Minor
    _PROPERTIES_BYTES = 4096                           # more than any version's cudaDeviceProp; name comes first

    def __init__(self) -> None:
        super().__init__()
        path = _find_libcudart()
        try:
            self.api = ctypes.CDLL(path)
        except OSError as err:
            raise ImportError(f"{path} cannot be loaded ({err})") from None
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        signatures = {"cudaGetDeviceCount": [ctypes.POINTER(ctypes.c_int)],
                      "cudaStreamCreate": [ctypes.POINTER(pointer)],
                      "cudaMalloc": [ctypes.POINTER(pointer), size], "cudaMallocHost": [ctypes.POINTER(pointer), size],
                      "cudaMemcpyAsync": [pointer, pointer, size, ctypes.c_int, pointer],
                      "cudaStreamSynchronize": [pointer], "cudaStreamDestroy": [pointer],
                      "cudaFree": [pointer], "cudaFreeHost": [pointer],
                      "cudaDeviceGetAttribute": [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int],
                      "cudaGetDeviceProperties": [ctypes.c_char_p, ctypes.c_int]}
        for function, arguments in signatures.items():
            getattr(self.api, function).argtypes = arguments
            getattr(self.api, function).restype = ctypes.c_int
        self.api.cudaGetErrorName.restype = ctypes.c_char_p
        count = ctypes.c_int(0)
        self.check(self.api.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
        if not count.value:
            raise CudaError("no CUDA GPU found")
        stream = ctypes.c_void_p()
        self.check(self.api.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        self.stream = stream

    def check(self, error: int, call: str) -> None:
        if error:
            raise CudaError(_error_message(call, (self.api.cudaGetErrorName(error) or b"cudaError %d" % error).decode()))

    def identity(self) -> GpuIdentity:
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self.check(self.api.cudaDeviceGetAttribute(ctypes.byref(major), self._COMPUTE_MAJOR, 0), "cudaDeviceGetAttribute")
        self.check(self.api.cudaDeviceGetAttribute(ctypes.byref(minor), self._COMPUTE_MINOR, 0), "cudaDeviceGetAttribute")
        properties = ctypes.create_string_buffer(self._PROPERTIES_BYTES)
        self.check(self.api.cudaGetDeviceProperties(properties, 0), "cudaGetDeviceProperties")
        name = properties.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
        return GpuIdentity(name.strip(), f"{major.value}.{minor.value}")

    def _allocate(self, function, nbytes: int, call: str) -> int:
        pointer = ctypes.c_void_p()
        self.check(function(ctypes.byref(pointer), nbytes), call)
        return int(pointer.value)

    def device_buffer(self, nbytes: int) -> int:
        return self._device_pointer(self._allocate(self.api.cudaMalloc, nbytes, "cudaMalloc"))

    def pinned_array(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        return self._host_array(self._allocate(self.api.cudaMallocHost, nbytes, "cudaMallocHost"), shape, dtype)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        self.check(self.api.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, self._HOST_TO_DEVICE, self.stream),
                   "cudaMemcpyAsync (to device)")

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        self.check(self.api.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, self._DEVICE_TO_HOST, self.stream),
                   "cudaMemcpyAsync (to host)")

    @property
    def stream_handle(self) -> int:
        return int(self.stream.value or 0)



RUNTIMES = (CudaPythonRuntime, SystemCudaRuntime, PyCudaRuntime)


def open_cuda(preferred: Optional[str] = None):
    """The first CUDA runtime that works (cuda-python, the machine's libcudart, pycuda); CudaError says why
    none does."""
    reasons = []
    for runtime in RUNTIMES:
        if preferred and runtime.name != preferred:
            continue
        try:
            return runtime()
        except ImportError as err:
            reasons.append(f"{runtime.name} not installed ({err})")
        except CudaError as err:
            reasons.append(f"{runtime.name}: {err}")
        except RuntimeError as err:  # cuda-python 11.x: "Failed to dlopen libcuda.so" (no driver mounted)
            reasons.append(f"{runtime.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    raise CudaError("CUDA is not usable here: " + "; ".join(reasons))


def driver_present() -> bool:
    """Whether the NVIDIA driver's CUDA library loads. Every runtime above goes through it, so without it
    there is no GPU to ask about; finding that out takes a millisecond, where importing cuda-python takes
    a tenth of a second of the runner's start-up on a machine without a GPU."""
    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return False
    return True


def current_gpu() -> Optional[GpuIdentity]:
    """The GPU this machine would run an engine on, or None without one (e.g. a CI machine)."""
    if not driver_present():
        return None
    try:
        runtime = open_cuda()
    except CudaError:
        return None
    try:
        return runtime.identity()
    finally:
        runtime.close()
