"""classify.py: classify X-ray images with an exported model and draw the result on each.

    python3 classify.py INPUT [OUTPUT] [--model models/pneumonia] [--threshold T] [--topK K]

INPUT is an image file, a folder (walked recursively) or a quoted glob; OUTPUT an image file or a
folder that mirrors the input layout. A bad file is reported and skipped; the rest are classified.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from tqdm import tqdm

from edge.backends import BACKEND_CHOICES
from edge.cli import ToolkitError, add_bool_flag, run_cli
from edge.decode import ImageDecodeError, decode_grey, jpeg_reduction, read_bytes
from edge.deployed_model import DeployedModel
from edge.model_files import default_model_path
from edge.overlay import annotate
from edge.prediction import Prediction
from edge.preprocess import PreprocessSpec, resize_to_network
from edge.results import ResultsWriter
from edge.sinks import ImageSink
from edge.sources import InputImage, expand_input

EXIT_SOME_FAILED = 1
STAGES = ("read", "decode+resize", "inference", "overlay+write")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Classify chest X-rays with an exported model and draw class and confidence on each.")
    parser.add_argument("input", help="image file, folder, or quoted glob such as 'xrays/*.jpeg'")
    parser.add_argument("output", nargs="?", default=None,
                        help="annotated image file, or a folder for several images (none: no images written)")
    parser.add_argument("--model", default=default_model_path(),
                        help="model folder or .onnx file (default: $NET, else models/pneumonia)")
    parser.add_argument("--labels", default=None,
                        help="labels file, one class per line (default: the labels embedded in the model)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold on the positive class probability "
                             "(default: the one chosen on validation data at training time)")
    parser.add_argument("--topK", "--top-k", dest="top_k", type=int, default=1,
                        help="classes to list on the image and console (default 1)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="auto (default): TensorRT when installed with a GPU present, else ONNX Runtime")
    parser.add_argument("--precision", choices=("fp16", "fp32", "int8"), default=None,
                        help="TensorRT engine / torch precision (default: fp16 on a GPU; ONNX Runtime runs fp32)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per inference call for folders (default 1; above 1 needs a "
                             "--dynamic-batch export)")
    add_bool_flag(parser, "build", True, "build the TensorRT engine when none matches the model; "
                                         "--no-build refuses to run instead")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0: back-end default)")
    parser.add_argument("--results", default=None,
                        help="results file (.csv or .jsonl), written as it goes "
                             "(default: OUTPUT/results.csv when OUTPUT is a folder)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-image console lines")
    return parser


def _results_path(args: argparse.Namespace, sink: ImageSink) -> Optional[str]:
    if args.results:
        return args.results
    if sink.enabled and not sink.single_file:
        return os.path.join(args.output, "results.csv")
    return None


def _row(image: InputImage, model: DeployedModel, prediction: Optional[Prediction],
         timings: Dict[str, float], error: str = "") -> Dict[str, object]:
    row: Dict[str, object] = {"path": image.path, "status": "error" if error else "ok", "error": error}
    if prediction is not None:
        row.update(label=prediction.label, class_index=prediction.class_index,
                   confidence=round(prediction.confidence, 6),
                   threshold=model.threshold if model.positive is not None else "",
                   **{f"p_{label}": round(p, 6) for label, p in prediction.ranked})
    row.update({f"ms_{stage}": round(ms, 3) for stage, ms in timings.items()})
    return row


@dataclass
class _Loaded:
    image: InputImage
    data: bytes
    grey: np.ndarray
    network_image: np.ndarray
    timings: Dict[str, float]


def _load(image: InputImage, spec: PreprocessSpec) -> _Loaded:
    start = time.perf_counter()
    data = read_bytes(image.path)
    read = time.perf_counter()
    grey = decode_grey(data, image.path, spec.decode_min_side)
    network_image = resize_to_network(grey, spec)
    done = time.perf_counter()
    return _Loaded(image, data, grey, network_image,
                   {"read": (read - start) * 1000, "decode+resize": (done - read) * 1000})


def _write_overlay(item: _Loaded, prediction: Prediction, sink: ImageSink, spec: PreprocessSpec, top_k: int) -> None:
    start = time.perf_counter()
    if sink.enabled:
        grey = item.grey
        if jpeg_reduction(item.data, spec.decode_min_side) > 1:
            # The overlay goes on the full-resolution image; the network saw a reduced decode of it.
            grey = decode_grey(item.data, item.image.path)
        sink.write(item.image, annotate(grey, prediction, top_k))
    item.timings["overlay+write"] = (time.perf_counter() - start) * 1000


def _batches(images: List[InputImage], size: int) -> Iterator[List[InputImage]]:
    for start in range(0, len(images), size):
        yield images[start:start + size]


def _console_line(image: InputImage, prediction: Prediction, total_ms: float) -> str:
    return (f"classify:  {prediction.text()}  class #{prediction.class_index} ({prediction.label})  "
            f"{image.path}  [{total_ms:.1f} ms]")


def _print_summary(done: int, failures: List[str], skipped: List[str], totals: Dict[str, float],
                   positives: int, model: DeployedModel, results: Optional[str]) -> None:
    print(f"\nclassified {done} image(s)" + (f", {len(failures)} failed" if failures else "")
          + (f", {len(skipped)} non-image file(s) skipped" if skipped else ""))
    if model.positive is not None and done:
        print(f"  {model.labels[model.positive]}: {positives} of {done} at threshold {model.threshold:.4f}")
    if done:
        per_stage = "  ".join(f"{stage} {totals[stage] / done:.2f}" for stage in STAGES)
        print(f"  mean ms per image: {per_stage}  total {sum(totals.values()) / done:.2f}")
    for failure in failures:
        print(f"  failed: {failure}", file=sys.stderr)
    if results:
        print(f"  results: {results}")


class _Tally:
    """Counts, per-stage totals and failures over a run; writes each result as it comes."""

    def __init__(self, model: DeployedModel, results: ResultsWriter, quiet: bool) -> None:
        self.model, self.results, self.quiet = model, results, quiet
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.failures: List[str] = []
        self.done = self.positives = 0

    def failed(self, image: InputImage, err: Exception, timings: Dict[str, float]) -> None:
        message = str(err) if isinstance(err, ImageDecodeError) else f"{image.path}: {err}"
        self.failures.append(message)
        self.results.write(_row(image, self.model, None, timings, message))
        tqdm.write(f"classify:  skipped {message}", file=sys.stderr)

    def classified(self, item: _Loaded, prediction: Prediction) -> None:
        self.done += 1
        self.positives += int(bool(prediction.positive))
        for stage, ms in item.timings.items():
            self.totals[stage] += ms
        self.results.write(_row(item.image, self.model, prediction, item.timings))
        if not self.quiet:
            tqdm.write(_console_line(item.image, prediction, sum(item.timings.values())))


def _classify_batch(batch: List[InputImage], model: DeployedModel, sink: ImageSink, top_k: int, tally: _Tally) -> None:
    loaded = []
    for image in batch:
        try:
            loaded.append(_load(image, model.spec))
        except (ImageDecodeError, OSError) as err:
            tally.failed(image, err, {})
    if not loaded:
        return
    start = time.perf_counter()
    predictions = model.predict(np.stack([item.network_image for item in loaded]))
    share = (time.perf_counter() - start) * 1000 / len(loaded)
    for item, prediction in zip(loaded, predictions):
        item.timings["inference"] = share
        try:
            _write_overlay(item, prediction, sink, model.spec, top_k)
        except OSError as err:
            tally.failed(item.image, err, item.timings)
            continue
        tally.classified(item, prediction)


def main(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ToolkitError("--topK must be at least 1")
    if args.batch_size < 1:
        raise ToolkitError("--batch-size must be at least 1")
    images, skipped = expand_input(args.input)
    model = DeployedModel(args.model, args.backend, args.labels, args.threshold, args.threads,
                          precision=args.precision, batch_size=args.batch_size, build=args.build)
    sink = ImageSink(args.output, images)
    results_path = _results_path(args, sink)
    fields = (["path", "status", "label", "class_index", "confidence", "threshold"]
              + [f"p_{label}" for label in model.labels] + [f"ms_{stage}" for stage in STAGES] + ["error"])
    results = ResultsWriter(results_path, fields)
    print(f"model: {model.describe()}")
    tally = _Tally(model, results, args.quiet)
    progress = tqdm(total=len(images), unit="img", disable=len(images) < 2 or None, leave=False)
    try:
        for batch in _batches(images, model.backend.max_batch):
            _classify_batch(batch, model, sink, args.top_k, tally)
            progress.update(len(batch))
    finally:
        results.close()
        progress.close()
        model.backend.close()
    _print_summary(tally.done, tally.failures, skipped, tally.totals, tally.positives, model, results_path)
    return EXIT_SOME_FAILED if tally.failures else 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "classify.py")
