"""TensorRT back-end: builds or loads the cached engine (like jetson-inference) and runs it.

One stream, page-locked host buffers sized for the engine's largest batch, device buffers for every
I/O tensor, the name-based tensor API (``set_tensor_address``/``execute_async_v3``) on TensorRT 8.5+
and bindings (``execute_async_v2``) before it. CUDA comes from cuda-python or pycuda, whichever is
installed. The GPU is checked before any TensorRT runtime object exists: a TensorRT runtime made on
a machine without a usable GPU can crash the whole process instead of raising.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from cxr_jetson.core.model_files import locate_model
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import CAM_NAME, INPUT_NAME, OUTPUT_NAME
from cxr_jetson.edge.backends import Backend, BackendError, BackendOptions
from cxr_jetson.edge.tensorrt.api import load_tensorrt
from cxr_jetson.edge.tensorrt.cuda import open_cuda
from cxr_jetson.edge.tensorrt.engine_record import EngineRecord, stale_reasons


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: str, options: BackendOptions = BackendOptions()) -> None:
        trt = load_tensorrt()
        self.cuda = open_cuda()  # raises CudaError without a GPU, before TensorRT's runtime is touched
        gpu = self.cuda.identity()
        path = locate_model(model, ("onnx", "engine"))
        if path.endswith(".engine"):
            reasons = stale_reasons(path, None, trt.flavor, trt.version, gpu)
            if reasons:
                raise BackendError(f"{path} cannot be used here: {'; '.join(reasons)}; rebuild it with trt_build.py")
            engine_path = path
        else:
            from cxr_jetson.edge.tensorrt.builder import BuildOptions, ensure_engine  # needs onnx; only to (re)build
            build = BuildOptions(precision=options.precision or "fp16", max_batch=options.batch_size)
            engine_path = ensure_engine(path, build, build=options.build, trt=trt)
        record = EngineRecord.read(engine_path)
        self.model_file = engine_path
        self.trt = trt
        self.runtime = trt.module.Runtime(trt.logger())
        with open(engine_path, "rb") as handle:
            self.engine = self.runtime.deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise BackendError(f"{trt.label} could not load {engine_path} (its log above says why)")
        self.context = self.engine.create_execution_context()
        self.info = ModelInfo.from_metadata(record.model_metadata)
        self.precision = record.precision
        self.device = f"cuda:0 {gpu.name}"
        self.max_batch = record.batch["max"]
        self.host: Dict[str, np.ndarray] = {}
        self.device_memory: Dict[str, int] = {}
        if trt.has_name_based_io:
            self._allocate_by_name()
        else:
            self._allocate_bindings()
        _, _, height, width = self.host[INPUT_NAME].shape
        self.resolution = height
        self.num_classes = self.host[OUTPUT_NAME].shape[-1]
        self.has_cam = CAM_NAME in self.host

    def _allocate(self, name: str, shape, dtype) -> None:
        shape = (self.max_batch,) + tuple(shape)[1:]  # the batch dimension is -1 in dynamic engines
        self.host[name] = self.cuda.pinned_array(shape, self.trt.module.nptype(dtype))
        self.device_memory[name] = self.cuda.device_buffer(self.host[name].nbytes)

    def _allocate_by_name(self) -> None:
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for name in names:
            self._allocate(name, engine.get_tensor_shape(name), engine.get_tensor_dtype(name))
            self.context.set_tensor_address(name, self.device_memory[name])
        self.dynamic = engine.get_tensor_shape(INPUT_NAME)[0] == -1
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == self.trt.module.TensorIOMode.OUTPUT]

    def _allocate_bindings(self) -> None:  # TensorRT 8.2 (JetPack 4.6, the Jetson Nano)
        engine = self.engine
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        for index, name in enumerate(names):
            self._allocate(name, engine.get_binding_shape(index), engine.get_binding_dtype(index))
        self.bindings: List[int] = [self.device_memory[name] for name in names]
        self.input_index = names.index(INPUT_NAME)
        self.dynamic = engine.get_binding_shape(self.input_index)[0] == -1
        self.outputs = [n for i, n in enumerate(names) if not engine.binding_is_input(i)]

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        count = len(batch)
        if count > self.max_batch:
            raise BackendError(f"batch of {count} exceeds the engine's maximum of {self.max_batch}")
        shape = (count,) + batch.shape[1:]
        if self.dynamic:
            if self.trt.has_name_based_io:
                self.context.set_input_shape(INPUT_NAME, shape)
            else:
                self.context.set_binding_shape(self.input_index, shape)
        host_input = self.host[INPUT_NAME][:count]
        host_input[...] = batch  # casts if the engine's input is not float32
        self.cuda.to_device(self.device_memory[INPUT_NAME], host_input)
        if self.trt.has_name_based_io:
            ok = self.context.execute_async_v3(self.cuda.stream_handle)
        else:
            ok = self.context.execute_async_v2(bindings=self.bindings, stream_handle=self.cuda.stream_handle)
        if not ok:
            raise BackendError("TensorRT failed to run the engine")
        for name in self.outputs:
            self.cuda.to_host(self.host[name][:count], self.device_memory[name])
        self.cuda.synchronize()
        return tuple(self.host[name][:count].astype(np.float32) for name in (OUTPUT_NAME, CAM_NAME) if name in self.host)

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.cuda.close()
