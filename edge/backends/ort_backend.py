"""ONNX Runtime back-end: runs the exported .onnx on the CUDA provider when present, else the CPU;
``--precision int8`` runs its quantized copy (``<arch>.int8.onnx``, onnx_export.py --int8) instead.
On the CPU, a model that equalises its input in the graph has that step done by OpenCV on the host,
bit for bit the same (host_equalize.py)."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from cxr_jetson.core.model_files import int8_model, locate_model, stale_int8
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import CAM_NAME, GATE_NAME, INPUT_NAME
from cxr_jetson.edge.backends import Backend, BackendError, BackendOptions
from cxr_jetson.edge.backends.host_equalize import EqualisationSplit, split_at_equalisation

_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: str, options: BackendOptions = BackendOptions()) -> None:
        if options.precision not in (None, "fp32", "int8"):
            raise BackendError(f"ONNX Runtime runs the FP32 ONNX or its INT8 copy; --precision {options.precision} "
                               "needs --backend tensorrt or torch")
        self.model_file = int8_model(model) if options.precision == "int8" else locate_model(model, ("onnx",))
        try:
            import onnxruntime
        except ImportError:
            raise BackendError("ONNX Runtime is not installed: pip install onnxruntime "
                               "(or onnxruntime-gpu)") from None
        session_options = onnxruntime.SessionOptions()
        session_options.log_severity_level = 3  # errors only; ORT's warnings are not actionable for users
        # Idle ORT threads spin by default; in the runner they share the CPU with the decode and encode
        # threads, and spinning cost a fifth of the throughput on a 2-core machine.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        available = onnxruntime.get_available_providers()
        providers = [p for p in _PREFERRED_PROVIDERS if p in available]
        # Without a CUDA provider, a hist model's equalisation is done on the host and the session opened
        # on the rest of the graph only: one session, not a whole one first to read the metadata.
        self.split: Optional[EqualisationSplit] = (split_at_equalisation(self.model_file)
                                                   if providers[0] == "CPUExecutionProvider" else None)
        try:
            self.session = onnxruntime.InferenceSession(self.split.trunk if self.split else self.model_file,
                                                        session_options, providers=providers)
        except Exception as err:  # ORT raises its own exception types for bad files
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(f"ONNX Runtime cannot load {self.model_file}: {first_line}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        # The trunk's first input may be the equalisation's output; the model's own input is still input_0
        # (split_at_equalisation cuts only a graph whose input it is), and the two have the same shape.
        self.input_name = INPUT_NAME if self.split is not None else inputs[0].name
        self.output_name = outputs[0].name
        present = {o.name for o in outputs}
        self.output_names = [outputs[0].name] + [name for name in (CAM_NAME, GATE_NAME) if name in present]
        self.has_cam, self.has_gate = CAM_NAME in present, GATE_NAME in present
        batch, channels, height, width = inputs[0].shape
        if channels != 3 or height != width or not isinstance(height, int):
            raise BackendError(f"{self.model_file} takes input {inputs[0].shape}; expected [N, 3, R, R]")
        self.resolution = height
        self.max_batch = batch if isinstance(batch, int) else max(1, options.batch_size)
        self.num_classes = outputs[0].shape[-1]
        self.device = "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"
        self.info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map)
        if self.info.quantization is not None:
            self.precision = "int8"
            stale = stale_int8(self.model_file, self.info.quantization)
            if stale:
                raise BackendError(stale)

    def run_all(self, batch: np.ndarray) -> Tuple[np.ndarray, ...]:
        feeds = self.split.feeds(batch) if self.split is not None else {self.input_name: batch}
        return tuple(self.session.run(self.output_names, feeds))

    def describe(self) -> str:
        host = ", equalisation on the host" if self.split is not None else ""
        return f"{self.name} ({self.device}, {self.precision}{host}, max batch {self.max_batch})"
