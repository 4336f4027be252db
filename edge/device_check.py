"""The first hour on a Jetson: one line per check, in the order things depend on each other.

    docker/jetson_check.sh                      # or: python3 -m cxr_jetson.edge.device_check
    docker/jetson_check.sh --model models/pneumonia

1. the JetPack (L4T release), Python, numpy and OpenCV (GStreamer or not);
2. TensorRT's Python bindings and version, and its ONNX parser;
3. CUDA: cudaGetDeviceCount through the runtime the TensorRT back-end uses, and the GPU;
4. an engine built from a model: --model's ONNX, else a small demo ONNX made here (no torch needed);
5. one inference through each back-end that runs here, its decision compared with ONNX Runtime's;
6. the camera plug-ins (nvarguscamerasrc, nvv4l2decoder) and the V4L2 cameras.
Each line says ok, warn or FAIL, what was found and how long it took. Checks 2 to 5 need the GPU: the
first of them that fails ends the run with its reason and exit status 1, since nothing after it can work.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import subprocess
import tempfile
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import INPUT_NAME, LABELS_FILE, OUTPUT_NAME

L4T_RELEASE = "/etc/nv_tegra_release"
DEMO_RESOLUTION = 64
Check = Tuple[str, str]  # (ok | warn | FAIL, what was found)


class GpuCheckFailed(ToolkitError):
    """A check the GPU path needs failed; the rest cannot run."""


def jetpack() -> Check:
    if not os.path.isfile(L4T_RELEASE):
        return "warn", f"not a Jetson (no {L4T_RELEASE}); {platform.machine()} {platform.system()}"
    with open(L4T_RELEASE, encoding="utf-8", errors="replace") as handle:
        return "ok", handle.readline().strip("# \n")


def python_and_opencv() -> Check:
    import cv2
    gstreamer = "GStreamer: YES" in " ".join(cv2.getBuildInformation().split())
    return ("ok" if gstreamer else "warn"), (f"Python {platform.python_version()}, numpy {np.__version__}, "
                                             f"OpenCV {cv2.__version__} {'with' if gstreamer else 'without'} GStreamer")


def tensorrt_bindings() -> Check:
    from cxr_jetson.edge.tensorrt.api import load_tensorrt
    trt = load_tensorrt("tensorrt")
    if not hasattr(trt.module, "OnnxParser"):
        raise GpuCheckFailed(f"{trt.label} has no ONNX parser (apt-get install libnvonnxparsers8 or 10)")
    return "ok", f"{trt.label}, ONNX parser present, {'strongly' if trt.strongly_typed else 'weakly'} typed"


def cuda_device() -> Check:
    from cxr_jetson.edge.tensorrt.cuda import open_cuda
    runtime = open_cuda()
    try:
        gpu = runtime.identity()
    finally:
        runtime.close()
    return "ok", f"{gpu.name} (SM {gpu.compute_capability}) through {runtime.name}"


def demo_onnx(folder: str) -> str:
    """A small model in this toolkit's ONNX contract (input_0 -> output_0 softmax), made with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper
    weights = np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", [INPUT_NAME], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["features"]),
         helper.make_node("Gemm", ["features", "weights", "bias"], ["logits"], transB=1),
         helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1)],
        "demo", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, DEMO_RESOLUTION, DEMO_RESOLUTION])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("weights", TensorProto.FLOAT, [2, 3], weights.ravel()),
         helper.make_tensor("bias", TensorProto.FLOAT, [2], [0.0, 0.1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = os.path.join(folder, "demo.onnx")
    onnx.save(model, path)
    with open(os.path.join(folder, LABELS_FILE), "w", encoding="utf-8") as handle:
        handle.write("NORMAL\nPNEUMONIA\n")
    return path


def build_engine(model: str) -> Check:
    from cxr_jetson.core.model_files import locate_model
    from cxr_jetson.edge.tensorrt.builder import BuildOptions, ensure_engine
    engine = ensure_engine(locate_model(model, ("onnx",)), BuildOptions(precision="fp16"))
    return "ok", f"{os.path.basename(engine)} ({os.path.getsize(engine) / 1e6:.1f} MB)"


def inference(model: str, backend: str) -> Check:
    """One image through ``backend``, its decision and probabilities against ONNX Runtime's."""
    from cxr_jetson.edge.deployed_model import DeployedModel
    deployed = DeployedModel(model, backend)
    image = (np.random.default_rng(0).random((1, deployed.spec.resolution, deployed.spec.resolution)) * 255)
    probabilities = deployed.probabilities(image.astype(np.uint8))
    decided = deployed.rule.classes(probabilities)[0]
    try:
        reference = DeployedModel(model, "onnxruntime").probabilities(image.astype(np.uint8))
    except ToolkitError as err:
        return "warn", f"{deployed.backend.describe()}: {deployed.labels[decided]}; no ONNX Runtime to compare ({err})"
    agree = deployed.rule.classes(reference)[0] == decided
    difference = float(np.abs(probabilities - reference).max())
    status = "ok" if agree and difference < 0.02 else "FAIL"
    return status, (f"{deployed.backend.describe()}: {deployed.labels[decided]}, "
                    f"{'same decision as' if agree else 'a different decision from'} ONNX Runtime, "
                    f"max |difference| {difference:.2e}")


def cameras() -> Check:
    found = sorted(glob.glob("/dev/video*"))
    inspect = shutil.which("gst-inspect-1.0")
    plugins = []
    for element in ("nvarguscamerasrc", "nvv4l2decoder", "h264parse"):
        # GStreamer's inspector with an element name from the fixed list above: no outside input
        present = inspect is not None and subprocess.run(  # noqa: S603 (fixed arguments)
            [inspect, element], capture_output=True).returncode == 0
        plugins.append(f"{element} {'yes' if present else 'no'}")
    status = "ok" if inspect and found else "warn"
    return status, f"V4L2 cameras: {', '.join(found) or 'none'}; GStreamer elements: {', '.join(plugins)}"


def _run(name: str, check: Callable[[], Check], needs_gpu: bool) -> bool:
    start = time.perf_counter()
    try:
        status, text = check()
    except (ToolkitError, ImportError, OSError) as err:
        status, text = "FAIL", str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"{status:<4}  {name:<22} {text}  ({time.perf_counter() - start:.2f} s)", flush=True)
    if status == "FAIL" and needs_gpu:
        raise GpuCheckFailed(f"{name} failed, so the GPU path cannot run here: {text}")
    return status != "FAIL"


def checks(model: Optional[str], folder: str) -> List[Tuple[str, Callable[[], Check], bool]]:
    target = model or folder
    steps = [("JetPack", jetpack, False), ("Python and OpenCV", python_and_opencv, False),
             ("TensorRT", tensorrt_bindings, True), ("CUDA", cuda_device, True),
             ("engine build", lambda: build_engine(target), True)]
    steps += [(f"inference: {backend}", (lambda b=backend: inference(target, b)), backend == "tensorrt")
              for backend in ("tensorrt", "onnxruntime", "torch") if model or backend != "torch"]
    return steps + [("cameras", cameras, False)]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check a Jetson for cxr-jetson, one line per check.")
    parser.add_argument("--model", default=None,
                        help="model folder to build and run (default: a small demo model made here)")
    return parser


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-jetson-check-") as folder:
        if args.model is None:
            demo_onnx(folder)
        passed = [_run(name, check, needs_gpu) for name, check, needs_gpu in checks(args.model, folder)]
    print(f"{sum(passed)} of {len(passed)} checks passed in {time.perf_counter() - start:.1f} s")
    return 0 if all(passed) else 1


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "jetson_check")


if __name__ == "__main__":
    cli()
