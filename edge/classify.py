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
from typing import Dict, List, Optional

from tqdm import tqdm

from edge.backends import BACKEND_CHOICES
from edge.cli import ToolkitError, run_cli
from edge.decode import ImageDecodeError, decode_grey, jpeg_reduction, read_bytes
from edge.deployed_model import DeployedModel, default_model_path
from edge.overlay import annotate
from edge.prediction import Prediction
from edge.preprocess import resize_to_network
from edge.results import ResultsWriter
from edge.sinks import ImageSink
from edge.sources import InputImage, expand_input

EXIT_SOME_FAILED = 1
STAGES = ("read", "decode+resize", "inference", "overlay+write")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Classify chest X-rays with an exported model and draw class and confidence on each.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
                        help="classes to list on the image and console")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="inference back-end")
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


def _classify_one(image: InputImage, model: DeployedModel, sink: ImageSink, top_k: int,
                  timings: Dict[str, float]) -> Prediction:
    start = time.perf_counter()
    data = read_bytes(image.path)
    decoded = time.perf_counter()
    grey = decode_grey(data, image.path, model.spec.decode_min_side)
    network_image = resize_to_network(grey, model.spec)
    preprocessed = time.perf_counter()
    prediction = model.predict(network_image[None])[0]
    inferred = time.perf_counter()
    if sink.enabled:
        # The overlay goes on the full-resolution image, which the network may have seen reduced.
        if jpeg_reduction(data, model.spec.decode_min_side) > 1:
            grey = decode_grey(data, image.path)
        sink.write(image, annotate(grey, prediction, top_k))
    written = time.perf_counter()
    for stage, (t0, t1) in zip(STAGES, ((start, decoded), (decoded, preprocessed),
                                        (preprocessed, inferred), (inferred, written))):
        timings[stage] = (t1 - t0) * 1000.0
    return prediction


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


def main(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ToolkitError("--topK must be at least 1")
    images, skipped = expand_input(args.input)
    model = DeployedModel(args.model, args.backend, args.labels, args.threshold, args.threads)
    sink = ImageSink(args.output, images)
    results_path = _results_path(args, sink)
    fields = (["path", "status", "label", "class_index", "confidence", "threshold"]
              + [f"p_{label}" for label in model.labels] + [f"ms_{stage}" for stage in STAGES] + ["error"])
    results = ResultsWriter(results_path, fields)
    print(f"model: {model.describe()}")
    totals = dict.fromkeys(STAGES, 0.0)
    failures: List[str] = []
    done = positives = 0
    progress = tqdm(images, unit="img", disable=len(images) < 2 or None, leave=False)
    try:
        for image in progress:
            timings: Dict[str, float] = {}
            try:
                prediction = _classify_one(image, model, sink, args.top_k, timings)
            except (ImageDecodeError, OSError) as err:
                message = str(err) if isinstance(err, ImageDecodeError) else f"{image.path}: {err}"
                failures.append(message)
                results.write(_row(image, model, None, timings, message))
                tqdm.write(f"classify:  skipped {message}", file=sys.stderr)
                continue
            done += 1
            positives += int(bool(prediction.positive))
            for stage, ms in timings.items():
                totals[stage] += ms
            results.write(_row(image, model, prediction, timings))
            if not args.quiet:
                tqdm.write(_console_line(image, prediction, sum(timings.values())))
    finally:
        results.close()
        progress.close()
    _print_summary(done, failures, skipped, totals, positives, model, results_path)
    return EXIT_SOME_FAILED if failures else 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "classify.py")
