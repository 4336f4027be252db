"""The TensorRT engine builder: ONNX -> engine, FP16 by default, cached beside the ONNX with a sidecar.

INT8 is explicit quantization: the engine is built from the quantized ``resnet18.int8.onnx`` that
onnx_export.py --int8 writes (Q/DQ nodes calibrated on real images there), with no calibrator here,
on every TensorRT: 8.5 and 10.x get BuilderFlag.INT8 (and FP16 for the layers left in float), 11 and
TensorRT-RTX (strongly typed) take the Q/DQ network as it is.

The engine (``resnet18.fp16.b1.engine``, ``resnet18.int8.b1.engine``) and its sidecar (``.engine.json``:
TensorRT version, GPU, precision, batch profile, the ONNX's sha256, the engine's own sha256) are
written atomically. An engine that no longer matches its ONNX, TensorRT or GPU is rebuilt
(``ensure_engine``); the TensorRT back-end does the same on load, or refuses with --no-build. Build
and inference are linked only by the engine file and its sidecar, as in NVIDIA's TensorRT samples.
The command is trt_build.py.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import onnx

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import atomic_path, check_writable, sha256_file
from cxr_jetson.core.model_files import int8_model, locate_model, stale_int8
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import FLOAT32_SCOPES, INPUT_NAME, OUTPUT_NAME, PRECISIONS
from cxr_jetson.edge.tensorrt.api import TensorRT, load_tensorrt
from cxr_jetson.edge.tensorrt.cuda import GpuIdentity, current_gpu
from cxr_jetson.edge.tensorrt.engine_record import EngineRecord, engine_path_for, stale_reasons
from cxr_jetson.edge.tensorrt.fp16_onnx import fp16_model
from cxr_jetson.edge.tensorrt.progress import Spinner, progress_monitor

LOG_LEVELS = ("error", "warning", "info", "verbose")
# The layers of a quantized network whose types its scales set; never constrained to float32 here.
_QDQ_LAYERS = ("QUANTIZE", "DEQUANTIZE")


class BuildError(ToolkitError):
    """The ONNX could not be parsed or the engine could not be built."""


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    max_batch: int = 1
    workspace_mib: Optional[int] = None
    tactic_shared_kib: Optional[int] = None
    timing_cache: Optional[str] = None
    compute_capabilities: Tuple[str, ...] = ()  # TensorRT-RTX offline targets
    log_level: str = "warning"


def _default_timing_cache(trt: TensorRT, gpu: Optional[GpuIdentity]) -> str:
    # One cache per TensorRT version and GPU, reused by every build on this machine.
    device = "".join(c if c.isalnum() else "-" for c in gpu.name).strip("-") if gpu else "offline"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cxr-jetson", f"{trt.flavor}-{trt.version}-{device}.timingcache")


class EngineBuilder:
    """Parses an ONNX into a network (create_network) and compiles it (create_engine)."""

    def __init__(self, trt: TensorRT, options: BuildOptions, gpu: Optional[GpuIdentity]) -> None:
        self.trt, self.options, self.gpu = trt, options, gpu
        self.logger = trt.logger(options.log_level)
        self.builder = trt.module.Builder(self.logger)
        self.config = self.builder.create_builder_config()
        self.profile = None

    def create_network(self, onnx_bytes: bytes, name: str):
        network = self.trt.create_network(self.builder)
        parser = self.trt.module.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
            reason = "; ".join(line.strip() for line in errors[0].splitlines() if line.strip()) if errors else ""
            raise BuildError(f"TensorRT cannot parse {name}: {reason or 'unknown error'}")
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for tensor in tensors:
                print(f"  network {kind} '{tensor.name}' shape {tuple(tensor.shape)} {tensor.dtype}")
        if [t.name for t in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [t.name for t in outputs]:
            raise BuildError(f"{name} has inputs {[t.name for t in inputs]} and outputs {[t.name for t in outputs]}; "
                             "this toolkit's models take input_0 and give output_0 (export with onnx_export.py)")
        shape = tuple(inputs[0].shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] < 1:
            raise BuildError(f"{name} takes input_0 of shape {shape}; expected [N, 3, R, R]")
        return network, shape

    def _keep_float32(self, network) -> None:
        """Weakly typed FP16/INT8 builds may run any float layer in FP16: the in-graph equalisation's pixel counts
        (up to R x R) and the input gate's distances must stay in float32. Strongly typed TensorRT takes its types
        from the network (edge/tensorrt/fp16_onnx.py keeps those nodes float32; the INT8 ONNX leaves them float32).
        The Q/DQ layers at a scope's edge are left alone: their scales, not a precision, define them."""
        kept = 0
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.name.startswith(FLOAT32_SCOPES) and layer.type.name not in _QDQ_LAYERS:
                layer.precision = self.trt.module.float32
                for output in range(layer.num_outputs):
                    if layer.get_output(output).dtype == self.trt.module.float32:
                        layer.set_output_type(output, self.trt.module.float32)
                kept += 1
        if kept:
            self.config.set_flag(self.trt.module.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)

    def _batch_profile(self, shape: Tuple[int, ...]) -> Dict[str, int]:
        batch = self.options.max_batch
        if shape[0] == -1:
            self.profile = self.builder.create_optimization_profile()
            dims = shape[1:]
            self.profile.set_shape(INPUT_NAME, (1,) + dims, (batch,) + dims, (batch,) + dims)
            self.config.add_optimization_profile(self.profile)
            return {"min": 1, "opt": batch, "max": batch}
        if shape[0] != batch:
            raise BuildError(f"the ONNX has a fixed batch of {shape[0]}, but --max-batch is {batch}; "
                             "export with onnx_export.py --dynamic-batch to build for larger batches")
        return {"min": batch, "opt": batch, "max": batch}

    def _configure_precision(self, network) -> None:
        """Builder flags for weakly typed TensorRT (8.5, 10.x). Strongly typed TensorRT (11, RTX) takes every type
        from the network: an FP16 copy for FP16 (_onnx_for_build), the Q/DQ network as it is for INT8."""
        if self.trt.strongly_typed or self.options.precision == "fp32":
            return
        flags = self.trt.module.BuilderFlag
        if self.options.precision == "int8":
            # Explicit quantization: the network's Q/DQ scales say what runs in INT8, so no calibrator is set.
            self.config.set_flag(flags.INT8)
        self.config.set_flag(flags.FP16)  # FP16, or the layers INT8 leaves in float: FP16 rather than FP32
        self._keep_float32(network)

    def _configure_target(self) -> List[str]:
        if not self.trt.is_rtx:
            return []
        capability = self.trt.module.ComputeCapability
        targets = [t.upper() for t in self.options.compute_capabilities]
        if not targets and self.gpu is None:
            raise BuildError("TensorRT-RTX cannot see a GPU here; name the target with --compute-capability, "
                             "e.g. SM86 (choices: SM75 SM80 SM86 SM89 SM120 SM121)")
        chosen = [getattr(capability, t, None) for t in targets] or [capability.CURRENT]
        if None in chosen:
            raise BuildError(f"unknown compute capability in {targets}; choose from SM75 SM80 SM86 SM89 SM120 SM121")
        self.config.num_compute_capabilities = len(chosen)
        for index, value in enumerate(chosen):
            self.config.set_compute_capability(value, index)
        return targets

    def _load_timing_cache(self):
        if self.trt.is_rtx or not self.options.timing_cache:  # TensorRT-RTX has no timing cache
            return None
        data = b""
        if os.path.isfile(self.options.timing_cache):
            with open(self.options.timing_cache, "rb") as handle:
                data = handle.read()
        cache = self.config.create_timing_cache(data)
        self.config.set_timing_cache(cache, True)
        return cache

    def _save_timing_cache(self) -> None:
        cache = self.config.get_timing_cache()
        if cache is not None:
            with atomic_path(self.options.timing_cache) as temporary, open(temporary, "wb") as handle:
                handle.write(bytes(cache.serialize()))

    def create_engine(self, network, shape: Tuple[int, ...]) -> Tuple[bytes, Dict[str, int], List[str], float]:
        if self.options.workspace_mib:
            self.trt.set_workspace(self.config, self.options.workspace_mib << 20)
        if self.options.tactic_shared_kib is not None:
            self.trt.set_tactic_shared_memory(self.config, self.options.tactic_shared_kib << 10)
        batch = self._batch_profile(shape)
        targets = self._configure_target()
        self._configure_precision(network)
        timing_cache = self._load_timing_cache()
        print(f"building a {self.options.precision.upper()} engine with {self.trt.label} "
              f"(this can take minutes on a Jetson)", flush=True)
        start = time.perf_counter()
        if self.trt.has_progress_monitor:
            self.config.progress_monitor = progress_monitor(self.trt)
            serialized = self.builder.build_serialized_network(network, self.config)
        else:
            with Spinner():
                serialized = self.builder.build_serialized_network(network, self.config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise BuildError(f"{self.trt.label} could not build the engine (its log above says why); "
                             "nothing was written")
        if timing_cache is not None:
            self._save_timing_cache()
        return bytes(serialized), batch, targets, seconds


def onnx_for(path: str, precision: str) -> str:
    """The ONNX an engine of ``precision`` is built from: for INT8 the quantized ``<arch>.int8.onnx`` beside the
    FP32 one (or a named INT8 ONNX as given), else the model's ONNX."""
    return int8_model(path) if precision == "int8" else locate_model(path, ("onnx",))


def _check_quantization(model: onnx.ModelProto, metadata: Dict[str, str], onnx_path: str, precision: str) -> None:
    """INT8 engines come only from a Q/DQ ONNX in TensorRT's form, and a Q/DQ ONNX makes only INT8 engines."""
    name = os.path.basename(onnx_path)
    qdq = [node for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq and precision != "int8":
        raise BuildError(f"{name} is quantized (INT8, Q/DQ nodes): build it with --precision int8")
    if precision == "int8" and not qdq:
        raise BuildError(f"{name} has no Q/DQ nodes, so it is not an INT8 model: make one with "
                         "python3 onnx_export.py --int8")
    quantization = ModelInfo.from_metadata(metadata).quantization
    stale = stale_int8(onnx_path, quantization) if precision == "int8" else None
    if stale:
        raise BuildError(stale)
    # The record names the form; unsigned zero points give the x86 form away in an ONNX without one.
    unsigned = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.UINT8}
    form = (quantization or {}).get("form") or (
        "x86" if any(unsigned.intersection(node.input[2:]) for node in qdq) else "tensorrt")
    if form != "tensorrt":
        folder = os.path.dirname(onnx_path) or "."
        raise BuildError(f"{name} is in the {form} INT8 form (unsigned activations, for ONNX Runtime on x86 CPUs), "
                         f"which TensorRT cannot build: re-export it with python3 onnx_export.py --model-dir {folder} "
                         "--int8 --int8-form tensorrt")


def _onnx_for_build(onnx_path: str, trt: TensorRT, precision: str) -> Tuple[bytes, Dict[str, str]]:
    """The bytes TensorRT parses (an FP16 copy for strongly typed FP16) and the model's metadata."""
    try:
        model = onnx.load(onnx_path)
    except Exception as err:  # onnx raises DecodeError and friends for non-ONNX files
        raise BuildError(f"{onnx_path} is not an ONNX model: {str(err).splitlines()[0][:120]}") from None
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    _check_quantization(model, metadata, onnx_path, precision)
    if precision == "fp16" and trt.strongly_typed:
        model = fp16_model(model)
    return model.SerializeToString(), metadata


def build_engine(onnx_path: str, options: BuildOptions, trt: Optional[TensorRT] = None) -> str:
    """Build the engine for ``onnx_path`` and write it with its sidecar; returns the engine path."""
    trt = trt or load_tensorrt()
    if options.precision not in PRECISIONS:
        raise BuildError(f"unknown precision {options.precision!r}; choose from {', '.join(PRECISIONS)}")
    if options.max_batch < 1:
        raise BuildError("--max-batch must be at least 1")
    gpu = current_gpu()
    options = dataclasses.replace(options, timing_cache=options.timing_cache or _default_timing_cache(trt, gpu))
    engine_path = engine_path_for(onnx_path, options.precision, options.max_batch)
    check_writable(engine_path, "engine")  # before a build that can take minutes, not after it
    if options.timing_cache and not trt.is_rtx:
        check_writable(options.timing_cache, "timing cache")
    onnx_bytes, metadata = _onnx_for_build(onnx_path, trt, options.precision)
    engine_builder = EngineBuilder(trt, options, gpu)
    network, shape = engine_builder.create_network(onnx_bytes, onnx_path)
    engine, batch, targets, seconds = engine_builder.create_engine(network, shape)
    with atomic_path(engine_path) as temporary, open(temporary, "wb") as handle:
        handle.write(engine)
    EngineRecord(
        onnx=os.path.basename(onnx_path), onnx_sha256=sha256_file(onnx_path), tensorrt_flavor=trt.flavor,
        tensorrt_version=trt.version, precision=options.precision, batch=batch,
        gpu=gpu.to_dict() if gpu else None, target_compute_capabilities=targets,
        engine_bytes=len(engine), engine_sha256=sha256_file(engine_path), build_seconds=round(seconds, 3),
        built_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_metadata=metadata).write(engine_path)
    where = gpu.name if gpu else f"offline for {', '.join(targets)}"
    print(f"=> engine written to:  {engine_path}  ({len(engine) / 1e6:.1f} MB, {options.precision}, batch "
          f"{batch['min']}-{batch['max']}, {trt.label}, {where}, {seconds:.1f} s)")
    return engine_path


def ensure_engine(onnx_path: str, options: BuildOptions, build: bool = True, force: bool = False,
                  trt: Optional[TensorRT] = None) -> str:
    """A usable engine for ``onnx_path``: the cached one when it still matches, else a new build."""
    trt = trt or load_tensorrt()
    engine_path = engine_path_for(onnx_path, options.precision, options.max_batch)
    reasons = ["--force"] if force else stale_reasons(engine_path, onnx_path, trt.flavor, trt.version, current_gpu())
    if not reasons:
        print(f"=> using cached engine {engine_path}")
        return engine_path
    if not build:
        raise BuildError(f"engine {engine_path} cannot be used: {'; '.join(reasons)}; "
                         "build it with trt_build.py (or drop --no-build)")
    print(f"=> building {engine_path}: {'; '.join(reasons)}")
    return build_engine(onnx_path, options, trt)


