"""Accuracy under shift and training speed: train.py's default recipe against jetson-inference's.

    python3 -m bench.train_recipes                        # 224 px, 5 epochs each, series IM held out
    python3 -m bench.train_recipes --epochs 35 --device cuda
    python3 -m bench.train_recipes --recipes ours --ours-args "--equalize none --augment light"

Both recipes train ResNet-18 from scratch on the same images in the same process, and both are
scored the same way on the patient-grouped validation split and on every shift proxy:

- the degraded copies of validation from train/shift.py (contrast, gamma, noise, resolution, mixed);
- ``series``: one acquisition series of normal images held out of training altogether. The normal
  images of this data set come in two series, ``IM-*`` and ``NORMAL2-IM-*``; with ``--holdout-series
  IM`` the ``IM-*`` normals of train and val are removed from both, and the proxy is those unseen
  normals plus the validation pneumonia images. A model that learnt one series' look as "normal"
  calls the other one pneumonia: the specificity collapse seen on the official test split.

Ours is ``train.py`` with its defaults (plus ``--ours-args``), scored at the threshold it saved.
jetson-inference's recipe is its train.py as plain torchvision code: ImageFolder + DataLoader decoding
every image every epoch, RandomResizedCrop + horizontal flip, batch 8, SGD lr 0.1 momentum 0.9,
weight decay 1e-4, the learning rate divided by 10 after 30/35 of the epochs, fp32; model_best is
the epoch with the best validation accuracy, and it decides by argmax (threshold 0.5), as
jetson-inference's imagenet.py does. Fewer epochs than 35 scale its step decay along.
"""
from __future__ import annotations

import argparse
import os
import shlex
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm import tqdm

from bench.machine import describe
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import class_to_record, positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.metric_registry import HEADLINE, interval_keys
from cxr_jetson.core.names import BEST_CHECKPOINT, LAST_CHECKPOINT
from cxr_jetson.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.dataset import CachedSplit, find_classes, list_images
from cxr_jetson.train.hardware import select_device
from cxr_jetson.train.intervals import patient_groups
from cxr_jetson.train.loop import predict_probabilities
from cxr_jetson.train.metrics import evaluate_probabilities
from cxr_jetson.train.report import write_json
from cxr_jetson.train.shift import PROXIES, load_with_proxies

SERIES_PROXY = "series"
REPORTED = tuple(metric.key for metric in HEADLINE)
SHARED_DATA = os.path.join("..", "shared", "datasets", "chest_xray")


def _positive(classes: List[str]) -> int:
    """The positive class of a two-class model trained on ``classes`` (what train.py records)."""
    return positive_index(classes, class_to_record(classes))


def find_data(requested: str, scratch: str) -> str:
    """The data set to train on: the one asked for, an imported real one, or one imported or generated now."""
    if requested:
        return requested
    if os.path.isdir(os.path.join("data", "pneumonia", "train")):
        return os.path.join("data", "pneumonia")
    from cxr_jetson.data.prepare import get_args_parser, prepare
    output = os.path.join(scratch, "data")
    if os.path.isdir(SHARED_DATA):
        prepare(get_args_parser().parse_args([SHARED_DATA, "--output", output]))
    else:
        from cxr_jetson.data.synthetic import generate
        generate(os.path.join(scratch, "download"), {"train": 200, "val": 20, "test": 0})
        prepare(get_args_parser().parse_args([os.path.join(scratch, "download"), "--output", output]))
    return output


def _link(source: str, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    os.symlink(os.path.realpath(source), os.path.join(folder, os.path.basename(source)))


def holdout_layout(data: str, output: str, prefix: str, negative: str, positive: str) -> Dict[str, int]:
    """DATA with the ``prefix-*`` images of class ``negative`` moved out of train and val into a
    ``series`` split, completed with val's ``positive`` images; symlinks only."""
    classes = find_classes(os.path.join(data, "train"))
    counts = {"train": 0, "val": 0, SERIES_PROXY: 0}
    for split in ("train", "val"):
        for path, label in list_images(os.path.join(data, split), classes):
            held_out = classes[label] == negative and os.path.basename(path).startswith(prefix + "-")
            target = SERIES_PROXY if held_out else split
            _link(path, os.path.join(output, target, classes[label]))
            counts[target] += 1
            if split == "val" and classes[label] == positive:
                _link(path, os.path.join(output, SERIES_PROXY, positive))
                counts[SERIES_PROXY] += 1
    if not os.path.isdir(os.path.join(output, SERIES_PROXY, negative)):
        raise ToolkitError(f"no {negative} image is named {prefix}-*; --holdout-series must name a series prefix "
                           "(IM or NORMAL2 in the Kermany data set), or be empty")
    return counts


def held_out_data(requested: str, prefix: str, scratch: str) -> Tuple[str, List[str], Optional[Dict[str, int]]]:
    """The data set (find_data) with the ``prefix-*`` normal series held out in SCRATCH (none without a
    prefix): its folder, its classes, and the layout's counts."""
    data = find_data(requested, scratch)
    classes = find_classes(os.path.join(data, "train"))
    if not prefix:
        return data, classes, None
    negative, positive = classes[1 - _positive(classes)], classes[_positive(classes)]
    held = os.path.join(scratch, "holdout")
    layout = holdout_layout(data, held, prefix, negative, positive)
    print(f"== series {prefix}-* {negative} images held out: {layout}")
    return held, classes, layout


def score(probabilities: np.ndarray, split: CachedSplit, positive: int, threshold: float) -> Dict[str, float]:
    """The headline metrics at ``threshold``, each with its 95% interval (train/intervals.py)."""
    metrics = evaluate_probabilities(probabilities, split.labels.numpy(), positive, threshold, intervals=True,
                                     groups=patient_groups(split.paths))
    kept = [name for key in REPORTED for name in (key, *interval_keys(key))] + ["threshold", "n"]
    return {key: metrics[key] for key in kept if key in metrics}


def load_everywhere(data: str, classes: List[str], spec: PreprocessSpec, series: bool) -> Dict[str, CachedSplit]:
    """Val, each proxy of it, and (with ``series``) the held-out series, decoded once as ``spec`` prepares them."""
    splits = load_with_proxies(data, "val", classes, spec, 2)
    if series:
        splits.update(load_with_proxies(data, SERIES_PROXY, classes, spec, 2, proxies=()))
    return splits


def predict_everywhere(model: torch.nn.Module, splits: Dict[str, CachedSplit], spec: PreprocessSpec,
                       device: torch.device) -> Dict[str, Tuple[np.ndarray, CachedSplit]]:
    """The model's probabilities on each of ``splits`` (load_everywhere), with the split."""
    model.to(device).eval()
    return {name: (predict_probabilities(model, split, spec, device, 64, False, f"score {name}"), split)
            for name, split in splits.items()}


def evaluate_everywhere(model: torch.nn.Module, data: str, classes: List[str], spec: PreprocessSpec,
                        threshold: float, device: torch.device, series: bool) -> Dict[str, Dict[str, float]]:
    """Metrics at ``threshold`` on val, each proxy of it, and the held-out series."""
    positive = _positive(classes)
    predictions = predict_everywhere(model, load_everywhere(data, classes, spec, series), spec, device)
    return {name: score(probabilities, split, positive, threshold)
            for name, (probabilities, split) in predictions.items()}


def run_ours(data: str, model_dir: str, epochs: int, resolution: int, device: str, extra: List[str]) -> Dict:
    from cxr_jetson.train.args import get_args_parser
    from cxr_jetson.train.main import main
    args = get_args_parser().parse_args([data, "--model-dir", model_dir, "--epochs", str(epochs), "--resolution",
                                         str(resolution), "--no-pretrained", "--print-freq", "0", "--seed", "0",
                                         "--no-tensorboard", "--device", device] + extra)
    start = time.perf_counter()
    main(args)
    seconds = time.perf_counter() - start
    checkpoint = load_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT))
    history = load_checkpoint(os.path.join(model_dir, LAST_CHECKPOINT))["history"]
    images = sum(entry["train_seconds"] * entry["train_images_per_second"] for entry in history)
    return {"seconds": seconds, "images_per_second": images / sum(e["train_seconds"] for e in history),
            "epoch_seconds": [entry["epoch_seconds"] for entry in history], "best_epoch": checkpoint["epoch"],
            "threshold": checkpoint["threshold"], "checkpoint": checkpoint,
            "command": "train.py " + " ".join(shlex.quote(a) for a in extra)}


def run_jetson(data: str, epochs: int, resolution: int, device: torch.device, workers: int) -> Dict:
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = torchvision.datasets.ImageFolder(os.path.join(data, "train"), transforms.Compose([
        transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    val_set = torchvision.datasets.ImageFolder(os.path.join(data, "val"), transforms.Compose([
        transforms.Resize(resolution), transforms.CenterCrop(resolution), transforms.ToTensor(), normalize]))
    train_loader = DataLoader(train_set, batch_size=8, shuffle=True, num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=8, num_workers=workers)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(train_set.classes)).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, round(epochs * 30 / 35)), gamma=0.1)
    best_accuracy, best_state, best_epoch, train_seconds, epoch_seconds = -1.0, None, 0, 0.0, []
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        epoch_start = time.perf_counter()
        for images, targets in tqdm(train_loader, desc=f"jetson recipe epoch {epoch}", leave=False, disable=None):
            loss = criterion(model(images.to(device)), targets.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_seconds += time.perf_counter() - epoch_start
        scheduler.step()
        model.eval()
        correct = 0
        with torch.inference_mode():
            for images, targets in val_loader:
                correct += int((model(images.to(device)).argmax(1).cpu() == targets).sum())
        accuracy = correct / len(val_set)
        epoch_seconds.append(time.perf_counter() - epoch_start)
        print(f"jetson recipe epoch {epoch}: val accuracy {accuracy:.4f} ({epoch_seconds[-1]:.1f} s)")
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    return {"seconds": seconds, "images_per_second": epochs * len(train_set) / train_seconds,
            "epoch_seconds": epoch_seconds, "best_epoch": best_epoch, "threshold": 0.5, "model": model,
            "classes": train_set.classes}


def _table(results: Dict[str, Dict]) -> str:
    names = list(next(iter(results.values()))["metrics"])
    lines = [f"{'split':<16}" + "".join(f"{recipe + ' ' + key[:4]:>15}" for recipe in results for key in REPORTED)]
    for name in names:
        lines.append(f"{name:<16}" + "".join(f"{results[recipe]['metrics'][name][key]:>15.4f}"
                                               for recipe in results for key in REPORTED))
    return "\n".join(lines)


def plot(results: Dict[str, Dict], path: str) -> None:
    """Each headline metric of each recipe on each split, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(next(iter(results.values()))["metrics"])
    figure, axes = plt.subplots(1, len(REPORTED), figsize=(5 * len(REPORTED), 4.5), sharey=True)
    width = 0.8 / len(results)
    for axis, key in zip(axes, REPORTED):
        for offset, (recipe, result) in enumerate(results.items()):
            values = [result["metrics"][name][key] for name in names]
            axis.bar(np.arange(len(names)) + offset * width, values, width, label=recipe)
        axis.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2)
        axis.set_xticklabels(names, rotation=35, ha="right")
        axis.set(title=key, ylim=(0, 1))
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower left")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the default recipe and jetson-inference's; score both "
                                                 "on validation and on shift proxies.")
    parser.add_argument("--data", default="", help="prepared data set (default: data/pneumonia, else an import "
                                                   "of ../shared/datasets/chest_xray, else synthetic)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each recipe (both recipes use 35 in full)")
    parser.add_argument("--resolution", type=int, default=224, help="network input size of both")
    parser.add_argument("--holdout-series", default="IM", metavar="PREFIX",
                        help="normal-image series held out of training as a proxy ('' to train on everything)")
    parser.add_argument("--recipes", default="ours,jetson", help="which recipes to run: ours, jetson or both")
    parser.add_argument("--ours-args", default="", help="extra train.py arguments for ours, e.g. \"--equalize none\"")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the jetson recipe")
    parser.add_argument("--model-dir", default="", help="keep our trained model here (default: discarded)")
    parser.add_argument("--output", default=os.path.join("bench", "results", "train_recipes.json"),
                        help="figures (JSON); a bar chart goes next to it as .png")
    return parser


def main(args: argparse.Namespace) -> int:
    recipes = [name for name in args.recipes.split(",") if name]
    if not recipes or set(recipes) - {"ours", "jetson"}:
        raise ToolkitError(f"--recipes {args.recipes}: name ours, jetson or ours,jetson")
    device = select_device(args.device)
    results: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        data, classes, layout = held_out_data(args.data, args.holdout_series, scratch)
        series = layout is not None
        # jetson-inference's recipe first: ours sets the process's allocator to keep freed memory
        # (train/hardware.py keep_freed_memory), which would speed up a plain loop run after it.
        if "jetson" in recipes:
            print("== jetson-inference's recipe: ImageFolder + DataLoader, batch 8, SGD lr 0.1, fp32")
            jetson = run_jetson(data, args.epochs, args.resolution, device, args.workers)
            jetson["metrics"] = evaluate_everywhere(jetson.pop("model"), data, jetson.pop("classes"),
                                                    PreprocessSpec(resolution=args.resolution), 0.5, device, series)
            results["jetson"] = jetson
        if "ours" in recipes:
            print("== ours: train.py defaults" + (f" + {args.ours_args}" if args.ours_args else ""))
            ours = run_ours(data, args.model_dir or os.path.join(scratch, "ours"), args.epochs, args.resolution,
                            args.device, shlex.split(args.ours_args))
            checkpoint = ours.pop("checkpoint")
            ours["metrics"] = evaluate_everywhere(model_from_checkpoint(checkpoint), data, classes,
                                                  preprocess_spec(checkpoint), ours["threshold"], device, series)
            results = {"ours": ours, **results}  # ours first in the table, as before
    print(f"\n{args.epochs} epoch(s) each at {args.resolution} px on {device}; proxies: {', '.join(PROXIES)}"
          + (f", {SERIES_PROXY} ({args.holdout_series}-* normals never trained on)" if series else ""))
    for recipe, result in results.items():
        print(f"{recipe:>7}: total {result['seconds']:.1f} s, {result['images_per_second']:.1f} img/s training, "
              f"last epoch {result['epoch_seconds'][-1]:.1f} s (with its validation), model_best epoch "
              f"{result['best_epoch']}, threshold {result['threshold']:.4f}")
    if len(results) == 2:
        jetson, ours = results["jetson"], results["ours"]
        print(f"speed-up, jetson / ours: whole run {jetson['seconds'] / ours['seconds']:.2f}x, last epoch "
              f"{jetson['epoch_seconds'][-1] / ours['epoch_seconds'][-1]:.2f}x")
    print(_table(results))
    write_json(args.output, {
        "machine": f"{describe()}, torch {torch.__version__}",
        "device": str(device), "epochs": args.epochs, "resolution": args.resolution,
        "holdout_series": args.holdout_series, "split_counts": layout, "results": results})
    picture = os.path.splitext(args.output)[0] + ".png"
    plot(results, picture)
    print(f"figures written to {args.output} and {picture}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.train_recipes")
