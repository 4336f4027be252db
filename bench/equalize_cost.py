"""What the equalisation inside the ONNX costs per image, against OpenCV's on the host, same process.

    python3 -m bench.equalize_cost [--resolution 224] [--repeat 200]
    python3 -m bench.equalize_cost --model models/pneumonia [--precision int8]   # and the whole model

Baseline: ``cv2.equalizeHist`` on the R x R grey image, then the normalisation to network input (what
the host did before the equalisation moved into the graph). Ours: the normalisation, then
networks/equalize.py's layers exported alone with the exporter onnx_export.py uses and run by ONNX
Runtime on the CPU (what the graph now adds in front of the network). Median milliseconds per image
over real X-rays from ../shared/datasets when present (else the synthetic ones), and the ratio.

With ``--model``: the model's whole graph in ONNX Runtime (the baseline) against the ONNX Runtime
back-end as classify.py runs it on a CPU, which equalises with OpenCV and runs the graph from there
(edge/backends/host_equalize.py), alternating image by image, with the largest output difference.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import cv2
import numpy as np
import onnxruntime

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.export.graph import DEFAULT_OPSET, export_graph
from cxr_jetson.networks.equalize import EqualizeHist

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets",
                       "chest_xray_fullres_samples")


def grey_images(resolution: int) -> List[np.ndarray]:
    paths = sorted(glob.glob(os.path.join(SAMPLES, "**", "*.jpeg"), recursive=True))
    images = [cv2.imread(path, cv2.IMREAD_GRAYSCALE) for path in paths]
    if not images:
        rng = np.random.default_rng(0)
        images = [synthetic_xray(rng, i % 2 == 1, 1000, 1200) for i in range(24)]
    return [cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA) for image in images]


def median_ms(step: Callable[[np.ndarray], object], images: List[np.ndarray], repeat: int) -> float:
    times = []
    for index in range(repeat):
        image = images[index % len(images)]
        start = time.perf_counter()
        step(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    spec = PreprocessSpec(resolution=args.resolution)
    images = grey_images(args.resolution)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "equalize.onnx")
        export_graph(EqualizeHist(spec.mean, spec.std).eval(), args.resolution, path, DEFAULT_OPSET, False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    host = median_ms(lambda image: normalize(cv2.equalizeHist(image), spec), images, args.repeat)
    graph = median_ms(lambda image: session.run(None, {"input_0": normalize(image, spec)}), images, args.repeat)
    print(f"{len(images)} images at {args.resolution} px, median of {args.repeat} runs, {args.threads} thread(s)")
    print(f"host: cv2.equalizeHist + normalise          {host:8.3f} ms")
    print(f"graph: normalise + equalisation in ONNX RT  {graph:8.3f} ms   ({graph / host:.1f}x the host's)")
    if args.model:
        whole_model(args, images)
    return 0


def whole_model(args: argparse.Namespace, images: List[np.ndarray]) -> None:
    from cxr_jetson.edge.backends import BackendOptions
    from cxr_jetson.edge.backends.ort_backend import OnnxRuntimeBackend
    backend = OnnxRuntimeBackend(args.model, BackendOptions(precision=args.precision, threads=args.threads))
    if backend.split is None:
        raise ToolkitError(f"{backend.model_file} has no in-graph equalisation to do on the host")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    whole = onnxruntime.InferenceSession(backend.model_file, options, providers=["CPUExecutionProvider"])
    spec = backend.info.spec
    batches = [normalize(cv2.resize(image, (spec.resolution,) * 2, interpolation=cv2.INTER_AREA), spec)
               for image in images]
    times: Dict[str, List[float]] = {"whole": [], "split": []}
    largest = 0.0
    for index in range(args.repeat):
        batch = batches[index % len(batches)]
        start = time.perf_counter()
        reference = whole.run(backend.output_names, {"input_0": batch})
        middle = time.perf_counter()
        outputs = backend.run_all(batch)
        times["whole"].append((middle - start) * 1000)
        times["split"].append((time.perf_counter() - middle) * 1000)
        largest = max(largest, max(float(np.abs(a - b).max()) for a, b in zip(outputs, reference)))
    whole_ms, split_ms = (statistics.median(times[name]) for name in ("whole", "split"))
    print(f"{os.path.basename(backend.model_file)} ({backend.precision}), median of {args.repeat} runs, "
          f"{args.threads} thread(s)")
    print(f"whole graph in ONNX Runtime                 {whole_ms:8.3f} ms")
    print(f"classify.py's back-end: OpenCV + the rest   {split_ms:8.3f} ms   ({whole_ms / split_ms:.2f}x faster); "
          f"largest output difference {largest:.3g}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Cost of the in-graph equalisation against OpenCV's.")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--model", default="", help="also time this model folder's ONNX whole and as classify.py runs it")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="with --model: which ONNX")
    return parser


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.equalize_cost")
