"""Does jetson-inference's imagenet.py decide as classify.py does? Both paths on the same image files.

    python3 -m bench.jetson_agreement --model models/pneumonia --tag after

For each image set: the full-resolution samples, the official val images (also full resolution),
validation, and validation's shift proxies (train/shift.py; written as lossless PNG at the network's
resolution, so both paths read the same pixels):
- classify.py's path: the runner's decode and preprocessing (core/preprocess.py) and the model's
  decision rule, on ONNX Runtime;
- imagenet.py's path: bench/imagenet_emulator.py (stb-style RGB load, nearest point sampling of the
  whole frame, argmax over output_0), on the same ONNX.
Printed and written as JSON: how often the two decide the same, and each one's accuracy against the
folder labels. Nothing here reads the official test split.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
from scipy.stats import binomtest

from bench.imagenet_emulator import ImageNetEmulator
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.image_files import expand_input
from cxr_jetson.core.model_files import default_model_path, locate_model
from cxr_jetson.core.names import LABELS_FILE
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.train.report import write_json

SHARED = os.path.join("..", "shared", "datasets")
PROXIES = ("contrast", "gamma", "noise", "resolution", "mixed")


def labelled_images(folder: str, labels: List[str]) -> List[Tuple[str, int]]:
    """(path, class index) for every image under folder/<CLASS>/, the class matched case-insensitively."""
    by_name = {label.lower(): index for index, label in enumerate(labels)}
    images = []
    for image in expand_input(folder)[0]:
        name = image.relpath.split(os.sep)[0].lower()
        if name in by_name:
            images.append((image.path, by_name[name]))
    return images


def write_proxies(val: str, labels: List[str], resolution: int, scratch: str) -> Dict[str, str]:
    """Validation at network resolution (area, no equalisation) and each shift proxy of it, as PNG folders."""
    from cxr_jetson.train.shift import degrade
    images = labelled_images(val, labels)
    pixels = np.stack([load_for_network(path, PreprocessSpec(resolution=resolution)) for path, _ in images])
    folders = {}
    for proxy in ("",) + PROXIES:
        folder = os.path.join(scratch, proxy or "plain")
        degraded = degrade(pixels, proxy, seed=PROXIES.index(proxy)) if proxy else pixels
        for (path, label), image in zip(images, degraded):
            os.makedirs(os.path.join(folder, labels[label]), exist_ok=True)
            name = os.path.splitext(os.path.basename(path))[0] + ".png"
            cv2.imwrite(os.path.join(folder, labels[label], name), image)
        folders["val~" + proxy if proxy else "val"] = folder
    return folders


def compare(model: DeployedModel, emulator: ImageNetEmulator, images: List[Tuple[str, int]]) -> Dict[str, Any]:
    ours, theirs, truth = [], [], []
    for path, label in images:
        probabilities = model.probabilities(load_for_network(path, model.spec)[None])
        ours.append(int(model.rule.classes(probabilities)[0]))
        theirs.append(emulator.classify(path)[0])
        truth.append(label)
    ours_, theirs_, truth_ = np.array(ours), np.array(theirs), np.array(truth)
    row: Dict[str, Any] = {"images": len(images)}
    for key, hits in (("agreement", ours_ == theirs_), ("accuracy_classify", ours_ == truth_),
                      ("accuracy_imagenet", theirs_ == truth_)):
        interval = binomtest(int(hits.sum()), len(hits)).proportion_ci(0.95, method="wilson")
        row[key], row[key + "_ci95"] = float(hits.mean()), [float(interval.low), float(interval.high)]
    return row


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Decisions of emulated imagenet.py against classify.py.")
    parser.add_argument("--model", default=default_model_path(), help="model folder with the exported ONNX")
    parser.add_argument("--val", default=os.path.join("data", "pneumonia", "val"), help="validation folder")
    parser.add_argument("--tag", default="", help="name of this run in the results file (e.g. before, after)")
    parser.add_argument("--output", default=os.path.join("bench", "results", "jetson_agreement.json"))
    return parser


def main(args: argparse.Namespace) -> int:
    onnx_path = locate_model(args.model, ("onnx",))
    model = DeployedModel(onnx_path, "onnxruntime")
    emulator = ImageNetEmulator(onnx_path, os.path.join(os.path.dirname(onnx_path), LABELS_FILE))
    sets = {"fullres samples": os.path.join(SHARED, "chest_xray_fullres_samples"),
            "official val (full resolution)": os.path.join(SHARED, "chest_xray", "val")}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        if os.path.isdir(args.val):
            sets.update(write_proxies(args.val, model.labels, model.spec.resolution, scratch))
        for name, folder in sets.items():
            if os.path.isdir(folder):
                results[name] = compare(model, emulator, labelled_images(folder, model.labels))
    print(f"{'image set':34} {'images':>6} {'agree (95% CI)':>24} {'acc classify.py':>16} {'acc imagenet.py':>16}")
    for name, row in results.items():
        low, high = row["agreement_ci95"]
        print(f"{name:34} {row['images']:6d} {row['agreement']:8.2%} ({low:6.2%}-{high:6.2%}) "
              f"{row['accuracy_classify']:16.2%} {row['accuracy_imagenet']:16.2%}")
    existing = {}
    if os.path.isfile(args.output):
        with open(args.output, encoding="utf-8") as handle:
            existing = json.load(handle)
    existing[args.tag or "run"] = {"model": onnx_path, "decision": model.describe(), "sets": results}
    write_json(args.output, existing)
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.jetson_agreement")
