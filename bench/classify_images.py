"""Per-image speed of the device path, and what reduced-scale JPEG decoding costs in accuracy.

    python3 -m bench.classify_images                     # ../shared/datasets/chest_xray_fullres_samples
    python3 -m bench.classify_images --images DIR --model models/pneumonia

Same process, same images, same ONNX Runtime session:
- baseline: what a straightforward script does: ``cv2.imread`` in full colour, ``cv2.resize`` to the
  network size, normalise, ONNX Runtime;
- ours: classify.py's path: JPEG decoded at 1/2-1/8 scale (never below 2x the network size) to
  grey, area resize, normalise, ONNX Runtime.
Also timed: torch eager inference of the same weights against ONNX Runtime, when torch is installed.
Tolerance: for every image, the pixel and probability differences between the reduced decode and
a full decode through otherwise identical preprocessing, and whether any decision flips.
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

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decode import decode_grey, read_bytes
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.model_files import default_model_path, locate_model
from cxr_jetson.core.preprocess import PreprocessSpec, normalize, resize_to_network
from cxr_jetson.edge.backends import BackendOptions
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.train.report import write_json

SHARED_IMAGES = os.path.join("..", "shared", "datasets", "chest_xray_fullres_samples")


def _median_ms(function: Callable[[], object], repeat: int) -> float:
    function()  # warm-up: first-call allocations, page cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def baseline_input(path: str, spec: PreprocessSpec) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(cv2.resize(bgr, (spec.resolution, spec.resolution)), cv2.COLOR_BGR2RGB)
    scaled = rgb.astype(np.float32) / 255.0
    return np.ascontiguousarray(((scaled - spec.mean) / spec.std).transpose(2, 0, 1)[None].astype(np.float32))


def our_input(path: str, spec: PreprocessSpec) -> np.ndarray:
    return normalize(resize_to_network(decode_grey(read_bytes(path), path, spec.decode_min_side), spec), spec)


def full_decode_input(path: str, spec: PreprocessSpec) -> np.ndarray:
    return normalize(resize_to_network(decode_grey(read_bytes(path), path), spec), spec)


def _model_path(requested: str, scratch: str) -> str:
    for candidate in (requested, default_model_path()):
        if candidate and os.path.exists(candidate):
            try:
                return locate_model(candidate, ("onnx",))
            except ToolkitError:  # no ONNX there yet: fall through to a fresh export
                continue
    # Timing does not depend on the weights: an untrained ResNet-18 exported the usual way will do.
    import torch
    import torchvision

    from cxr_jetson.export.graph import export_graph
    model = torch.nn.Sequential(torchvision.models.resnet18(num_classes=2), torch.nn.Softmax(1)).eval()
    path = os.path.join(scratch, "resnet18.onnx")
    export_graph(model, 224, path, 13, False)
    return path


def _torch_model(model_file: str):
    """The checkpoint beside the ONNX, as an eager torch model (the deployable wrapper), or None."""
    try:
        import torch

        from cxr_jetson.networks.checkpoint import load_checkpoint
        from cxr_jetson.networks.deployable import deployment
    except ImportError:
        return None
    try:
        checkpoint = load_checkpoint(locate_model(model_file, ("checkpoint",)))
    except ToolkitError:
        return None
    model = deployment(checkpoint, cam=False).network
    torch.set_grad_enabled(False)
    return lambda batch: model(torch.from_numpy(batch))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time the device path per image against a naive baseline.")
    parser.add_argument("--images", default="", help="folder of images (default: the shared full-resolution samples)")
    parser.add_argument("--model", default="", help="model dir or .onnx (default: models/pneumonia, else untrained)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per image (median taken)")
    parser.add_argument("--output", default=os.path.join("bench", "results", "classify_images.json"))
    return parser


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.images or (SHARED_IMAGES if os.path.isdir(SHARED_IMAGES) else "")
        if not folder:
            from cxr_jetson.data.synthetic import synthetic_xray
            rng = np.random.default_rng(0)
            folder = scratch
            for index in range(12):
                cv2.imwrite(os.path.join(scratch, f"synthetic_{index}.jpeg"),
                            synthetic_xray(rng, index % 2 == 1, 1700, 2000))
        paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                       if p.lower().endswith((".jpeg", ".jpg", ".png")))
        model = DeployedModel(_model_path(args.model, scratch), options=BackendOptions(threads=os.cpu_count() or 1))
        spec, infer, rule = model.spec, model.backend.infer, model.rule
        eager = _torch_model(model.model_file)
        rows: List[Dict[str, float]] = []
        for path in paths:
            ours, full = our_input(path, spec), full_decode_input(path, spec)
            probability_ours, probability_full = infer(ours)[0], infer(full)[0]
            row = {
                "image": os.path.basename(path), "shape": list(cv2.imread(path, cv2.IMREAD_GRAYSCALE).shape),
                "baseline_preprocess_ms": _median_ms(lambda: baseline_input(path, spec), args.repeat),
                "ours_preprocess_ms": _median_ms(lambda: our_input(path, spec), args.repeat),
                "ort_ms": _median_ms(lambda: infer(ours), args.repeat),
                "pixel_mean_abs_diff": float(np.abs(ours - full).mean() * 255 * spec.std[0]),
                "probability_abs_diff": float(np.abs(probability_ours - probability_full).max()),
                "decision_flip": bool(len(set(rule.classes(np.stack([probability_ours, probability_full])))) > 1),
            }
            if eager is not None:
                row["torch_eager_ms"] = _median_ms(lambda: eager(ours), args.repeat)
            rows.append(row)
    mean = {key: statistics.mean(r[key] for r in rows) for key in rows[0] if key.endswith("_ms")}
    baseline_total = mean["baseline_preprocess_ms"] + mean["ort_ms"]
    ours_total = mean["ours_preprocess_ms"] + mean["ort_ms"]
    print(f"{len(rows)} images from {folder}, model {model.model_file} ({model.backend.describe()})")
    print(f"{'mean per image':32} {'baseline':>10} {'ours':>10} {'ratio':>7}")
    print(f"{'decode + preprocess (ms)':32} {mean['baseline_preprocess_ms']:10.2f} {mean['ours_preprocess_ms']:10.2f} "
          f"{mean['baseline_preprocess_ms'] / mean['ours_preprocess_ms']:6.2f}x")
    print(f"{'preprocess + ONNX Runtime (ms)':32} {baseline_total:10.2f} {ours_total:10.2f} "
          f"{baseline_total / ours_total:6.2f}x")
    if "torch_eager_ms" in mean:
        print(f"{'inference: torch eager vs ORT (ms)':32} {mean['torch_eager_ms']:10.2f} {mean['ort_ms']:10.2f} "
              f"{mean['torch_eager_ms'] / mean['ort_ms']:6.2f}x")
    print(f"reduced vs full decode: mean |pixel diff| {max(r['pixel_mean_abs_diff'] for r in rows):.3f} grey levels "
          f"(worst image), max |probability diff| {max(r['probability_abs_diff'] for r in rows):.2e}, "
          f"decision flips {sum(r['decision_flip'] for r in rows)} of {len(rows)}")
    write_json(args.output, {"images": folder, "model": model.model_file, "backend": model.backend.describe(),
                             "mean": mean, "ratio_total": baseline_total / ours_total, "per_image": rows})
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.classify_images")
