"""benchmark.py: every back-end and precision this machine has, on a labelled folder: accuracy and speed.

    python3 benchmark.py --model-dir models/pneumonia data/pneumonia/val
    python3 benchmark.py --model-dir models/pneumonia data/pneumonia/val --backends onnxruntime --runs 50

The command to run after building an engine: does it decide like the FP32 ONNX, and how fast is it?
LABELLED_DIR holds one sub-folder per class, named as the model's labels (data/pneumonia/val's layout).
Each image is decoded and resized once through the shared preprocessing; then for each candidate
(``candidates``: ONNX Runtime FP32, and INT8 when ``<arch>.int8.onnx`` exists; TensorRT FP32, FP16 and
INT8 where TensorRT and a GPU are; the torch back-end where torch and the checkpoint are) it reports
- accuracy, sensitivity and specificity with 95% Wilson intervals, and AUC, at the threshold the model
  ships with, and their differences to the reference (ONNX Runtime FP32, what export verified against
  torch); decisions flipped against it; the input gate's coverage (decided, REFER, NOT ASSESSED) and how
  many refusals changed;
- batch-1 latency of the inference call alone (p50, p99 over ``--runs``), throughput at the best batch size
  the model takes (a fixed-batch export takes 1; ``onnx_export.py --dynamic-batch`` for more), model size.
One table on the console, the same as JSON (``--json``) and a picture (``--plot``, edge/benchmark_plot.py).
A candidate that cannot run here gets one line saying why, and the others go on.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from cxr_jetson.core.agreement import Answers, answers, changed, coverage, screening
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import atomic_path, check_writable
from cxr_jetson.core.image_files import is_image_name
from cxr_jetson.core.model_files import default_model_path, in_model_dir, int8_model
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, normalize
from cxr_jetson.edge.backends import BACKENDS, BackendOptions, auto_backend
from cxr_jetson.edge.deployed_model import DeployedModel

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
REFERENCE = ("onnxruntime", "fp32")


class DataFolderError(ToolkitError):
    """The labelled folder cannot be benchmarked on, whatever the back-end."""


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8 N x R x R
    targets: np.ndarray  # class index per image, in the model's label order
    unreadable: List[str]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Accuracy and speed of every back-end and precision on a labelled "
                                                 "folder.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", metavar="LABELLED_DIR", help="one sub-folder of images per class (the model's labels)")
    parser.add_argument("--model-dir", default=default_model_path(), help="the model folder (ONNX, checkpoint)")
    parser.add_argument("--backends", default="all", help="comma-separated back-ends to try (onnxruntime, tensorrt, "
                                                          "torch), or all: every one this machine has")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="the first N images per class (0: all)")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 runs per candidate (p50 and p99)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0: its default)")
    parser.add_argument("--json", default="benchmark.json", help="results as JSON (a bare name: in --model-dir)")
    parser.add_argument("--plot", default="benchmark.png", help="results as a picture (a bare name: in --model-dir)")
    return parser


def labelled_images(folder: str, labels: List[str], spec: PreprocessSpec, limit: int = 0) -> LabelledImages:
    """The images of ``folder/<label>/`` for every label, decoded once; unreadable files are listed."""
    missing = [label for label in labels if not os.path.isdir(os.path.join(folder, label))]
    if not os.path.isdir(folder) or missing:
        raise ToolkitError(f"{folder} needs one sub-folder per class named as the model's labels {labels}; "
                           f"missing: {', '.join(missing) or folder}")
    paths = []
    for index, label in enumerate(labels):
        names = sorted(n for n in os.listdir(os.path.join(folder, label)) if is_image_name(n))
        paths += [(os.path.join(folder, label, name), index) for name in names[:limit or None]]
    images, targets, unreadable = [], [], []
    for path, target in tqdm(paths, desc="decoding", unit="img", disable=None, leave=False):
        try:
            images.append(load_for_network(path, spec))
            targets.append(target)
        except ToolkitError as err:
            unreadable.append(f"{path}: {err}")
    if not images:
        raise ToolkitError(f"no readable images in {folder}")
    return LabelledImages(np.stack(images), np.asarray(targets), unreadable)


def _load(args: argparse.Namespace, model: DeployedModel) -> LabelledImages:
    try:
        data = labelled_images(args.data, model.labels, model.spec, args.limit)
    except ToolkitError as err:
        raise DataFolderError(str(err)) from None
    print(f"=> {len(data.images)} images from {args.data}"
          + (f"; {len(data.unreadable)} unreadable, left out" if data.unreadable else ""), flush=True)
    return data


def candidates(model_dir: str, requested: str) -> List[Tuple[str, str]]:
    """(back-end, precision) pairs worth trying here, the reference first."""
    wanted = list(BACKENDS) if requested == "all" else [name.strip() for name in requested.split(",")]
    unknown = [name for name in wanted if name not in BACKENDS]
    if unknown:
        raise ToolkitError(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)} or all")
    try:
        int8_model(model_dir)
        has_int8 = True
    except ToolkitError:
        has_int8 = False
    found: List[Tuple[str, str]] = []
    if "onnxruntime" in wanted:
        found += [("onnxruntime", "fp32")] + ([("onnxruntime", "int8")] if has_int8 else [])
    if "tensorrt" in wanted and auto_backend() == "tensorrt":
        found += [("tensorrt", "fp32"), ("tensorrt", "fp16")] + ([("tensorrt", "int8")] if has_int8 else [])
    if "torch" in wanted and importlib.util.find_spec("torch") is not None:
        found.append(("torch", "default"))  # its own choice: FP16 and a CUDA graph on a GPU, else FP32
    if not found:
        raise ToolkitError(f"no back-end to benchmark among {', '.join(wanted)} on this machine")
    return found


def latencies_ms(call: Callable[[], object], runs: int, warm_up: int = 10) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls, after ``warm_up`` untimed ones (allocations, lazy
    initialisation, GPU clocks)."""
    for _ in range(warm_up):
        call()
    times = np.empty(runs)
    for index in range(runs):
        start = time.perf_counter()
        call()
        times[index] = (time.perf_counter() - start) * 1000
    return times


def timing(model: DeployedModel, image: np.ndarray, runs: int) -> Dict[str, Any]:
    """Batch-1 latency of the inference call (p50, p99 in ms) and the best throughput over BATCH_SIZES."""
    backend = model.backend
    one = normalize(image, model.spec)
    times = latencies_ms(lambda: backend.run_all(one), runs)
    throughput = {}
    for size in (s for s in BATCH_SIZES if s <= backend.max_batch):
        batch = np.repeat(one, size, axis=0)
        backend.run_all(batch)
        repeats = max(3, 64 // size)
        start = time.perf_counter()
        for _ in range(repeats):
            backend.run_all(batch)
        throughput[size] = size * repeats / (time.perf_counter() - start)
    best = max(throughput, key=throughput.get)
    return {"latency_ms": {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
                           "runs": runs},
            "throughput": {"batch": best, "images_per_second": throughput[best], "by_batch": throughput}}


def evaluate(model: DeployedModel, data: LabelledImages) -> Answers:
    """The answers classify.py would give for every image (outputs in the back-end's own batches)."""
    probabilities, _, scores = model.split(model.run(data.images))
    return answers(probabilities, scores, model.rule, model.gate)


def _row(backend: str, precision: str, model: DeployedModel, result: Answers, data: LabelledImages,
         reference: Optional[Answers], runs: int) -> Dict[str, Any]:
    metrics = screening(result, data.targets, model.rule.positive)
    row: Dict[str, Any] = {"backend": backend, "precision": model.backend.precision, "requested": precision,
                           "device": model.backend.device, "model_file": model.model_file,
                           "size_mb": os.path.getsize(model.model_file) / 1e6, "metrics": metrics,
                           "int8_form": (model.backend.info.quantization or {}).get("form"),
                           "coverage": coverage(result)}
    if reference is not None:
        row.update(changed(reference, result))
    row.update(timing(model, data.images[0], runs))
    return row


def main(args: argparse.Namespace) -> int:
    from cxr_jetson.edge.benchmark_report import deltas, print_table, save_plot
    json_path, plot_path = (in_model_dir(args.model_dir, path) for path in (args.json, args.plot))
    check_writable(json_path, "--json")
    rows: List[Dict[str, Any]] = []
    data: Optional[LabelledImages] = None
    reference: Optional[Answers] = None
    for backend, precision in candidates(args.model_dir, args.backends):
        label = f"{backend} {precision}"
        try:
            options = BackendOptions(None if precision == "default" else precision, args.threads, max(BATCH_SIZES))
            model = DeployedModel(args.model_dir, backend, options=options)
            if data is None:  # outside the candidates' own failures: a folder that cannot serve ends the run
                data = _load(args, model)
            print(f"=> {label}: {model.describe()}", flush=True)
            result = evaluate(model, data)
            rows.append(_row(backend, precision, model, result, data, reference, args.runs))
            model.backend.close()
        except ToolkitError as err:
            if isinstance(err, DataFolderError):
                raise
            print(f"=> {label}: not measured: {err}", flush=True)
            rows.append({"backend": backend, "requested": precision, "error": str(err)})
            continue
        if (backend, precision) == REFERENCE:
            reference = result
    deltas(rows)
    print_table(rows)
    record = {"model_dir": args.model_dir, "data": args.data, "images": 0 if data is None else len(data.images),
              "unreadable": [] if data is None else data.unreadable, "reference": " ".join(REFERENCE), "rows": rows}
    with atomic_path(json_path) as temporary, open(temporary, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True, default=float)
    print(f"=> results: {json_path}" + (f", {plot_path}" if save_plot(rows, plot_path) else ""))
    return 0 if any("error" not in row for row in rows) else 1


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "benchmark.py")
