"""TensorRT back-end: builds or loads the cached engine (like jetson-inference) and runs it; with
``--precision int8`` the engine of the quantized ``<arch>.int8.onnx`` (onnx_export.py --int8).

One stream, page-locked host buffers sized for the engine's largest batch, device buffers for every
I/O tensor, the name-based tensor API (``set_tensor_address``/``execute_async_v3``, TensorRT 8.5+).
CUDA comes from cuda-python, the system's CUDA runtime or pycuda (edge/tensorrt/cuda.py). The GPU is
checked before any TensorRT runtime object exists: a TensorRT runtime made on a machine without a
usable GPU can crash the whole process instead of raising.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from cxr_jetson.core.model_files import locate_model
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import CAM_NAME, GATE_NAME, INPUT_NAME, INT8_ONNX_SUFFIX, OUTPUT_NAME
from cxr_jetson.edge.backends import Backend, BackendError, BackendOptions
from cxr_jetson.edge.tensorrt.api import TensorRT, load_tensorrt, numpy_dtype
from cxr_jetson.edge.tensorrt.cuda import GpuIdentity, open_cuda
from cxr_jetson.edge.tensorrt.engine_record import EngineRecord, stale_reasons


def _engine_for(path: str, options: BackendOptions, trt: TensorRT, gpu: GpuIdentity, force: bool = False) -> str:
    """The engine to load: ``path`` itself when it is a valid engine, else the (re)built one for an ONNX."""
    if path.endswith(".engine"):
        reasons = stale_reasons(path, None, trt.flavor, trt.version, gpu)
        if reasons:
            raise BackendError(f"{path} cannot be used here: {'; '.join(reasons)}; rebuild it with trt_build.py")
        return path
    from cxr_jetson.edge.tensorrt.builder import BuildOptions, ensure_engine, onnx_for  # needs onnx; only to build
    # A named INT8 ONNX means INT8, as ONNX Runtime runs it; a model folder or FP32 ONNX means FP16 unless told.
    precision = options.precision or ("int8" if path.lower().endswith(INT8_ONNX_SUFFIX) else "fp16")
    build = BuildOptions(precision=precision, max_batch=options.batch_size)
    return ensure_engine(onnx_for(path, precision), build, build=options.build, force=force, trt=trt)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: str, options: BackendOptions = BackendOptions()) -> None:
        self.trt = trt = load_tensorrt()
        self.cuda = open_cuda()  # raises CudaError without a GPU, before TensorRT's runtime is touched
        gpu = self.cuda.identity()
        path = locate_model(model, ("onnx", "engine"))
        self.runtime = trt.module.Runtime(trt.logger())
        engine_path = _engine_for(path, options, trt, gpu)
        self.engine = self._deserialize(engine_path)
        if self.engine is None and path.endswith(".onnx") and options.build:
            # An engine that passed every recorded check can still be refused (a TensorRT build from
            # another package of the same version); the ONNX is here, so build it again once.
            print(f"=> {trt.label} could not load {engine_path}; rebuilding it")
            engine_path = _engine_for(path, options, trt, gpu, force=True)
            self.engine = self._deserialize(engine_path)
        if self.engine is None:
            raise BackendError(f"{trt.label} could not load {engine_path} (its log above says why); "
                               "rebuild it with trt_build.py --force")
        record = EngineRecord.read(engine_path)
        self.model_file = engine_path
        self.context = self.engine.create_execution_context()
        self.info = ModelInfo.from_metadata(record.model_metadata)
        self.precision = record.precision
        self.device = f"cuda:0 {gpu.name}"
        self.max_batch = record.batch["max"]
        self.host: Dict[str, np.ndarray] = {}
        self.device_memory: Dict[str, int] = {}
        self._allocate()
        _, _, height, width = self.host[INPUT_NAME].shape
        self.resolution = height
        self.num_classes = self.host[OUTPUT_NAME].shape[-1]
        self.has_cam, self.has_gate = CAM_NAME in self.host, GATE_NAME in self.host

    def _deserialize(self, engine_path: str) -> Optional[object]:
        with open(engine_path, "rb") as handle:
            return self.runtime.deserialize_cuda_engine(handle.read())

    def _allocate(self) -> None:
        """Pinned host and device buffers for every I/O tensor, at the engine's largest batch."""
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            shape = (self.max_batch,) + tuple(engine.get_tensor_shape(name))[1:]  # the batch is -1 when dynamic
            self.host[name] = self.cuda.pinned_array(shape, numpy_dtype(engine.get_tensor_dtype(name)))
            self.device_memory[name] = self.cuda.device_buffer(self.host[name].nbytes)
            self.context.set_tensor_address(name, self.device_memory[name])
        self.dynamic = engine.get_tensor_shape(INPUT_NAME)[0] == -1
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.module.TensorIOMode.OUTPUT]

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        count = len(batch)
        if count > self.max_batch:
            raise BackendError(f"batch of {count} exceeds the engine's maximum of {self.max_batch}")
        if self.dynamic:
            self.context.set_input_shape(INPUT_NAME, (count,) + batch.shape[1:])
        host_input = self.host[INPUT_NAME][:count]
        host_input[...] = batch  # casts if the engine's input is not float32
        self.cuda.to_device(self.device_memory[INPUT_NAME], host_input)
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise BackendError("TensorRT failed to run the engine")
        for name in self.outputs:
            self.cuda.to_host(self.host[name][:count], self.device_memory[name])
        self.cuda.synchronize()
        return tuple(self.host[name][:count].astype(np.float32) for name in (OUTPUT_NAME, CAM_NAME, GATE_NAME)
                     if name in self.host)

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.cuda.close()
