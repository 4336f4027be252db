"""trt_build.py: ONNX -> TensorRT engine, FP16 by default, cached beside the ONNX with a sidecar.

    python3 trt_build.py --model-dir models/pneumonia                 # on the Jetson
    python3 trt_build.py --onnx models/pneumonia/resnet18.onnx --precision fp32
    python3 trt_build.py --model-dir models/pneumonia --precision int8 --calibration-images data/pneumonia/val

The engine (``resnet18.fp16.b1.engine``) and its sidecar (``.engine.json``: TensorRT version, GPU,
precision, batch profile, the ONNX's sha256, the engine's own sha256) are written atomically. An
engine that no longer matches its ONNX, TensorRT or GPU is rebuilt; classify.py does the same on
load, or refuses with --no-build. Build and inference are separate programs linked only by the
engine file and its sidecar, as in NVIDIA's TensorRT samples.
"""
from __future__ import annotations

import argparse
import datetime
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import onnx
from tqdm import tqdm

from edge.cli import ToolkitError, run_cli
from edge.cuda_runtime import GpuIdentity, current_gpu, open_cuda
from edge.model_files import default_model_path, resolve_model_file
from edge.engine_record import PRECISIONS, EngineRecord, engine_path_for, stale_reasons
from edge.files import atomic_path, sha256_file
from edge.model_info import ModelInfo
from edge.tensorrt_api import TensorRT, load_tensorrt
from export.fp16_onnx import fp16_model
from export.int8_calibrator import ImageBatcher, entropy_calibrator

LOG_LEVELS = ("error", "warning", "info", "verbose")


class BuildError(ToolkitError):
    """The ONNX could not be parsed or the engine could not be built."""


@dataclass
class BuildOptions:
    precision: str = "fp16"
    max_batch: int = 1
    workspace_mib: Optional[int] = None
    tactic_shared_kib: Optional[int] = None
    timing_cache: Optional[str] = None
    compute_capabilities: List[str] = field(default_factory=list)  # TensorRT-RTX offline targets
    log_level: str = "warning"
    calibration_images: Optional[str] = None
    calibration_batches: int = 16
    calibration_cache: Optional[str] = None  # default: beside the ONNX, <stem>.int8.calibration


def _default_timing_cache(trt: TensorRT, gpu: Optional[GpuIdentity]) -> str:
    # One cache per TensorRT version and GPU, reused by every build on this machine.
    device = "".join(c if c.isalnum() else "-" for c in gpu.name).strip("-") if gpu else "offline"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cxr-jetson", f"{trt.flavor}-{trt.version}-{device}.timingcache")


def _progress_monitor(trt: TensorRT):
    """TensorRT 10+'s IProgressMonitor, shown as one live status line (or phase lines off a terminal)."""

    class BuildProgress(trt.module.IProgressMonitor):
        def __init__(self) -> None:
            trt.module.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()
            self.phases: Dict[str, List] = {}
            self.status = tqdm(bar_format="{desc}", disable=None, leave=False)

        def _depth(self, name: Optional[str]) -> int:
            depth = 0
            while name in self.phases:
                name, depth = self.phases[name][0], depth + 1
            return depth

        def _show(self) -> None:
            path = " > ".join(f"{name} [{done}/{steps}]" for name, (_, steps, done) in self.phases.items())
            self.status.set_description_str(f"building {time.perf_counter() - self.start:5.1f} s: {path}")

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            self.phases[phase_name] = [parent_phase, num_steps, 0]
            depth = self._depth(parent_phase)
            if self.status.disable and depth <= 1:  # off a terminal: the two outer levels, one line each
                print(f"  {time.perf_counter() - self.start:6.1f} s  {'  ' * depth}{phase_name}", flush=True)
            self._show()

        def step_complete(self, phase_name, step) -> bool:
            if phase_name in self.phases:
                self.phases[phase_name][2] = step + 1
            self._show()
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            self.phases.pop(phase_name, None)
            self._show()

    return BuildProgress()


class _Spinner:
    """Elapsed time while a TensorRT 8.x build runs (it has no progress callback)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        with tqdm(bar_format="{desc}", disable=None, leave=False) as status:
            while not self.done.wait(0.5):
                status.set_description_str(f"building engine: {time.perf_counter() - start:5.1f} s")

    def __enter__(self) -> "_Spinner":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


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
            raise BuildError(f"TensorRT cannot parse {name}: {errors[0] if errors else 'unknown error'}")
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for tensor in tensors:
                print(f"  network {kind} '{tensor.name}' shape {tuple(tensor.shape)} {tensor.dtype}")
        if [t.name for t in inputs] != ["input_0"] or "output_0" not in [t.name for t in outputs]:
            raise BuildError(f"{name} has inputs {[t.name for t in inputs]} and outputs {[t.name for t in outputs]}; "
                             "this toolkit's models take input_0 and give output_0 (export with onnx_export.py)")
        shape = tuple(inputs[0].shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or shape[2] < 1:
            raise BuildError(f"{name} takes input_0 of shape {shape}; expected [N, 3, R, R]")
        return network, shape

    def _batch_profile(self, shape: Tuple[int, ...]) -> Dict[str, int]:
        batch = self.options.max_batch
        if shape[0] == -1:
            self.profile = self.builder.create_optimization_profile()
            dims = shape[1:]
            self.profile.set_shape("input_0", (1,) + dims, (batch,) + dims, (batch,) + dims)
            self.config.add_optimization_profile(self.profile)
            return {"min": 1, "opt": batch, "max": batch}
        if shape[0] != batch:
            raise BuildError(f"the ONNX has a fixed batch of {shape[0]}, but --max-batch is {batch}; "
                             "export with onnx_export.py --dynamic-batch to build for larger batches")
        return {"min": batch, "opt": batch, "max": batch}

    def _configure_precision(self, spec) -> Optional[object]:
        """Builder flags for weakly typed TensorRT; strongly typed ones get an FP16 network instead."""
        flags, precision = self.trt.module.BuilderFlag, self.options.precision
        if precision == "fp16" and not self.trt.strongly_typed:
            self.config.set_flag(flags.FP16)
        if precision != "int8":
            return None
        if not self.trt.has_int8_calibration:
            raise BuildError(f"{self.trt.label} builds INT8 only from a quantized (Q/DQ) ONNX, which this toolkit "
                             "does not make yet; use --precision fp16")
        batcher = (ImageBatcher(self.options.calibration_images, spec, 8, self.options.calibration_batches)
                   if self.options.calibration_images else None)
        self.cuda = open_cuda()  # calibration batches go through GPU memory
        calibrator = entropy_calibrator(self.trt.module, batcher, self.options.calibration_cache, self.cuda)
        self.config.set_flag(flags.INT8)
        self.config.set_flag(flags.FP16)  # layers INT8 cannot run fall back to FP16, not FP32
        self.config.int8_calibrator = calibrator
        if self.profile is not None:
            self.config.set_calibration_profile(self.profile)
        return calibrator

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

    def create_engine(self, network, shape: Tuple[int, ...], spec) -> Tuple[bytes, Dict[str, int], List[str], float]:
        if self.options.workspace_mib:
            self.trt.set_workspace(self.config, self.options.workspace_mib << 20)
        if self.options.tactic_shared_kib is not None:
            self.config.set_memory_pool_limit(self.trt.module.MemoryPoolType.TACTIC_SHARED_MEMORY,
                                              self.options.tactic_shared_kib << 10)
        batch = self._batch_profile(shape)
        targets = self._configure_target()
        self._configure_precision(spec)
        timing_cache = self._load_timing_cache()
        print(f"building a {self.options.precision.upper()} engine with {self.trt.label} "
              f"(this can take minutes on a Jetson)", flush=True)
        start = time.perf_counter()
        if self.trt.has_progress_monitor:
            self.config.progress_monitor = _progress_monitor(self.trt)
            serialized = self.builder.build_serialized_network(network, self.config)
        else:
            with _Spinner():
                serialized = self.builder.build_serialized_network(network, self.config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise BuildError(f"{self.trt.label} could not build the engine (its log above says why); "
                             "nothing was written")
        if timing_cache is not None:
            self._save_timing_cache()
        return bytes(serialized), batch, targets, seconds


def _onnx_for_build(onnx_path: str, trt: TensorRT, precision: str) -> Tuple[bytes, Dict[str, str]]:
    """The bytes TensorRT parses (an FP16 copy for strongly typed FP16) and the model's metadata."""
    try:
        model = onnx.load(onnx_path)
    except Exception as err:  # onnx raises DecodeError and friends for non-ONNX files
        raise BuildError(f"{onnx_path} is not an ONNX model: {str(err).splitlines()[0][:120]}") from None
    metadata = {entry.key: entry.value for entry in model.metadata_props}
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
    options.timing_cache = options.timing_cache or _default_timing_cache(trt, gpu)
    options.calibration_cache = options.calibration_cache or os.path.splitext(onnx_path)[0] + ".int8.calibration"
    onnx_bytes, metadata = _onnx_for_build(onnx_path, trt, options.precision)
    builder = EngineBuilder(trt, options, gpu)
    network, shape = builder.create_network(onnx_bytes, onnx_path)
    spec = ModelInfo.from_metadata(metadata).spec
    engine, batch, targets, seconds = builder.create_engine(network, shape, spec)
    engine_path = engine_path_for(onnx_path, options.precision, options.max_batch)
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Build a TensorRT engine from this toolkit's ONNX (FP16 by default).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model-dir", default=default_model_path(), help="folder holding the .onnx")
    parser.add_argument("--onnx", default=None, help="ONNX file (instead of --model-dir)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision")
    parser.add_argument("--max-batch", type=int, default=1, help="largest batch (needs a --dynamic-batch export above 1)")
    parser.add_argument("--workspace", type=int, default=None, metavar="MIB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--tactic-shared-memory", type=int, default=None, metavar="KIB",
                        help="limit on the shared memory tactics may use, in KiB (default: TensorRT's)")
    parser.add_argument("--timing-cache", default=None, help="timing cache file, reused across builds "
                                                             "(default: ~/.cache/cxr-jetson/<tensorrt>-<gpu>.timingcache)")
    parser.add_argument("--compute-capability", default="", metavar="SM86[,SM89]",
                        help="TensorRT-RTX only: target GPUs when building on a machine without one")
    parser.add_argument("--calibration-images", default=None, metavar="DIR",
                        help="INT8: folder of real images for calibration (e.g. data/pneumonia/val)")
    parser.add_argument("--calibration-batches", type=int, default=16, help="INT8: batches of 8 images to use")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="TensorRT build log verbosity")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached engine still matches")
    parser.add_argument("--check", action="store_true",
                        help="only report whether the cached engine can be used (exit 1 when it cannot)")
    return parser


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(precision=args.precision, max_batch=args.max_batch, workspace_mib=args.workspace,
                        tactic_shared_kib=args.tactic_shared_memory, timing_cache=args.timing_cache,
                        compute_capabilities=[c for c in args.compute_capability.split(",") if c],
                        log_level=args.log_level, calibration_images=args.calibration_images,
                        calibration_batches=args.calibration_batches)


def main(args: argparse.Namespace) -> int:
    onnx_path = resolve_model_file(args.onnx or args.model_dir)
    trt = load_tensorrt()
    options = options_from_args(args)
    if args.check:
        engine_path = engine_path_for(onnx_path, options.precision, options.max_batch)
        reasons = stale_reasons(engine_path, onnx_path, trt.flavor, trt.version, current_gpu())
        print(f"{engine_path}: " + ("up to date" if not reasons else "; ".join(reasons)))
        return 1 if reasons else 0
    ensure_engine(onnx_path, options, build=True, force=args.force, trt=trt)
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "trt_build.py")
