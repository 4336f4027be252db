"""What the equalisation inside the ONNX costs per image, against OpenCV's on the host, same process.

    python3 -m bench.equalize_cost [--resolution 224] [--repeat 200]

Baseline: ``cv2.equalizeHist`` on the R x R grey image, then the normalisation to network input (what
the host did before the equalisation moved into the graph). Ours: the normalisation, then
networks/equalize.py's layers exported alone with the exporter onnx_export.py uses and run by ONNX
Runtime on the CPU (what the graph now adds in front of the network). Median milliseconds per image
over real X-rays from ../shared/datasets when present (else the synthetic ones), and the ratio.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time
from typing import Callable, List

import cv2
import numpy as np
import onnxruntime

from cxr_jetson.core.cli import run_cli
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
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Cost of the in-graph equalisation against OpenCV's.")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    return parser


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.equalize_cost")
