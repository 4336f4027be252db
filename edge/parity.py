"""Compare two back-ends on the same images: where does reduced precision change the answer?

    python3 -m cxr_jetson.edge.parity data/pneumonia/val --model models/pneumonia --a tensorrt:fp16 --b onnxruntime

Every image is decoded and preprocessed once; both back-ends get the same float32 batch. Reported:
the largest and mean absolute probability difference, how often the two decisions (at the model's
threshold) agree, and every image whose decision flips. FP16 accuracy loss is the most common
complaint about TensorRT; this makes it visible before deployment.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Tuple

import numpy as np
from tqdm import tqdm

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ImageDecodeError, ToolkitError
from cxr_jetson.core.image_files import expand_input
from cxr_jetson.core.model_files import default_model_path
from cxr_jetson.core.preprocess import load_for_network
from cxr_jetson.edge.backends import BackendOptions
from cxr_jetson.edge.deployed_model import DeployedModel


def _backend_spec(text: str) -> Tuple[str, object]:
    name, _, precision = text.partition(":")
    return name, precision or None


def compare(folder: str, model: str, first: str, second: str, batch_size: int = 1) -> Dict[str, object]:
    images, _ = expand_input(folder)
    models = []
    for spec in (first, second):
        name, precision = _backend_spec(spec)
        models.append(DeployedModel(model, name, options=BackendOptions(precision=precision, batch_size=batch_size)))
    reference = models[0]
    paths: List[str] = []
    pixels = []
    for image in tqdm(images, desc="preprocessing", unit="img", disable=None, leave=False):
        try:
            pixels.append(load_for_network(image.path, reference.spec))
            paths.append(image.path)
        except ImageDecodeError as err:
            print(f"parity: skipped {err}")
    if not pixels:
        raise ToolkitError(f"no readable images in {folder}")
    batch = np.stack(pixels)
    a, b = (m.probabilities(batch) for m in models)
    # The same rule for both: only the numerics differ.
    decisions_a, decisions_b = reference.rule.classes(a), reference.rule.classes(b)
    difference = np.abs(a - b)
    flips = [{"image": path, "a": a[i].round(6).tolist(), "b": b[i].round(6).tolist()}
             for i, path in enumerate(paths) if decisions_a[i] != decisions_b[i]]
    for model_ in models:
        model_.backend.close()
    return {"a": models[0].backend.describe(), "b": models[1].backend.describe(), "images": len(paths),
            "max_abs_difference": float(difference.max()), "mean_abs_difference": float(difference.mean()),
            "decision_agreement": 1.0 - len(flips) / len(paths), "flips": flips,
            "threshold": reference.rule.threshold, "labels": reference.labels}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare the probabilities of two back-ends on a folder of images.")
    parser.add_argument("images", help="image file, folder or quoted glob")
    parser.add_argument("--model", default=default_model_path(), help="model folder (default: $NET or models/pneumonia)")
    parser.add_argument("--a", default="tensorrt:fp16", help="first back-end[:precision] (default tensorrt:fp16)")
    parser.add_argument("--b", default="onnxruntime", help="second back-end[:precision] (default onnxruntime, fp32)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per inference call (default 1)")
    parser.add_argument("--output", default=None, help="also write the report as JSON here")
    return parser


def main(args: argparse.Namespace) -> int:
    report = compare(args.images, args.model, args.a, args.b, args.batch_size)
    print(f"a: {report['a']}\nb: {report['b']}")
    print(f"{report['images']} images: max |a - b| {report['max_abs_difference']:.3e}, "
          f"mean {report['mean_abs_difference']:.3e}; decisions agree on {report['decision_agreement']:.2%}"
          f" at threshold {report['threshold']}")
    for flip in report["flips"]:
        print(f"  flips: {flip['image']}  a {flip['a']}  b {flip['b']}")
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "edge.parity")
