"""GPU latency of the torch CUDA back-end against plain torch eager FP32, and its FP16 parity.

    python3 -m bench.gpu_latency --model models/pneumonia --images data/pneumonia/val

For x86 GPU machines that have torch but no TensorRT (e.g. an H100/H200 test machine). In one
process, on the same GPU and weights:
- baseline: torch eager FP32, NCHW, one launch per layer;
- ours: edge/backends/torch_backend.py: FP16, channels-last, the whole batch as one CUDA graph;
at batch 1 (latency, median of --runs synchronised runs) and batch 64 (throughput). Then the parity
tool compares torch FP16 with ONNX Runtime FP32 (CPU) on real images.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.model_files import default_model_path, locate_model
from cxr_jetson.train.report import write_json


def _median_ms(run, torch, runs: int) -> float:
    for _ in range(10):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Torch CUDA back-end latency and FP16 parity on a GPU.")
    parser.add_argument("--model", default=default_model_path(), help="model folder (checkpoint + ONNX)")
    parser.add_argument("--images", default=os.path.join("data", "pneumonia", "val"), help="images for the parity check")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per measurement (median taken)")
    parser.add_argument("--output", default=os.path.join("bench", "results", "gpu_latency.json"))
    return parser


def main(args: argparse.Namespace) -> int:
    import torch

    from cxr_jetson.edge.backends import BackendOptions
    from cxr_jetson.edge.backends.torch_backend import TorchBackend
    from cxr_jetson.edge.parity import compare
    from cxr_jetson.networks.checkpoint import load_checkpoint
    from cxr_jetson.networks.deployable import deployment
    if not torch.cuda.is_available():
        raise ToolkitError("this benchmark needs a CUDA GPU (torch sees none here)")
    checkpoint = load_checkpoint(locate_model(args.model, ("checkpoint",)))
    resolution = int(checkpoint["resolution"])
    # The same deployed network (equalisation, probabilities and maps) as the back-end runs, in plain eager FP32.
    eager = deployment(checkpoint).network.cuda()
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for batch in (1, 64):
        images = np.random.default_rng(0).normal(size=(batch, 3, resolution, resolution)).astype(np.float32)
        ours = TorchBackend(args.model, BackendOptions(precision="fp16", batch_size=batch))
        inputs = torch.from_numpy(images).cuda()
        with torch.inference_mode():
            baseline_ms = _median_ms(lambda: eager(inputs), torch, args.runs)
        ours_ms = _median_ms(lambda: ours.infer(images), torch, args.runs)
        result[f"batch{batch}"] = {"eager_fp32_ms": baseline_ms, "ours_fp16_graph_ms": ours_ms,
                                   "eager_images_per_second": batch * 1000 / baseline_ms,
                                   "ours_images_per_second": batch * 1000 / ours_ms, "ratio": baseline_ms / ours_ms}
        print(f"batch {batch:2d}: eager FP32 {baseline_ms:.3f} ms, FP16 + CUDA graph {ours_ms:.3f} ms "
              f"(incl. host copies), {baseline_ms / ours_ms:.2f}x; {batch * 1000 / ours_ms:.0f} img/s")
    parity = compare(args.images, args.model, "torch:fp16", "onnxruntime")
    result["parity_fp16_vs_onnxruntime_fp32"] = {k: parity[k] for k in
                                                ("images", "max_abs_difference", "mean_abs_difference",
                                                 "decision_agreement", "flips")}
    print(f"FP16 vs ONNX Runtime FP32 on {parity['images']} images: max |diff| {parity['max_abs_difference']:.2e}, "
          f"mean {parity['mean_abs_difference']:.2e}, decisions agree {parity['decision_agreement']:.2%}")
    write_json(args.output, result)
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.gpu_latency")
