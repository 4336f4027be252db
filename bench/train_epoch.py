"""Training speed: train.py against jetson-inference's recipe, same data, same process, same machine.

    python3 -m bench.train_epoch                 # data/pneumonia, else ../shared/datasets/chest_xray, else synthetic
    python3 -m bench.train_epoch --data DIR --epochs 2

Ours: ``train.py`` itself (decode-once uint8 cache, batched augmentation, bf16 autocast where the
CPU has it, channels_last), for --epochs epochs, each with its validation pass.
Baseline: jetson-inference's train.py recipe as plain torchvision code: ImageFolder +
DataLoader(batch 8, 2 workers) decoding and augmenting every image every epoch (RandomResizedCrop,
flip, ToTensor, Normalize), fp32, SGD lr 0.1; one epoch plus its validation pass (Resize +
CenterCrop). Both train ResNet-18 from scratch at 224 px; the ratio printed is baseline epoch time
over ours.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from edge.cli import run_cli
from edge.preprocess import IMAGENET_MEAN, IMAGENET_STD
from train.report import write_json

SHARED_DATA = os.path.join("..", "shared", "datasets", "chest_xray")


def find_data(requested: str, scratch: str) -> str:
    """The data set to time on: the one asked for, an imported real one, or a generated one."""
    if requested:
        return requested
    if os.path.isdir(os.path.join("data", "pneumonia", "train")):
        return os.path.join("data", "pneumonia")
    from data.prepare import get_args_parser, prepare
    output = os.path.join(scratch, "data")
    if os.path.isdir(SHARED_DATA):
        prepare(get_args_parser().parse_args([SHARED_DATA, "--output", output]))
    else:
        from data.synthetic import generate
        generate(os.path.join(scratch, "download"), {"train": 200, "val": 2, "test": 0})
        prepare(get_args_parser().parse_args([os.path.join(scratch, "download"), "--output", output]))
    return output


def time_ours(data: str, epochs: int, workers: int, model_dir: str) -> dict:
    from train.args import get_args_parser
    from train.checkpoint import load_checkpoint
    from train.main import main
    args = get_args_parser().parse_args([data, "--model-dir", model_dir, "--epochs", str(epochs), "--no-pretrained",
                                         "--print-freq", "0", "--seed", "0", "--workers", str(workers),
                                         "--no-tensorboard"])
    start = time.perf_counter()
    main(args)
    total = time.perf_counter() - start
    history = load_checkpoint(os.path.join(model_dir, "checkpoint.pth.tar"))["history"]
    return {"run_seconds": total, "epochs": history,
            "epoch_seconds": [entry["epoch_seconds"] for entry in history]}


def time_baseline(data: str, workers: int) -> dict:
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = torchvision.datasets.ImageFolder(os.path.join(data, "train"), transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    val_set = torchvision.datasets.ImageFolder(os.path.join(data, "val"), transforms.Compose([
        transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(), normalize]))
    train_loader = DataLoader(train_set, batch_size=8, shuffle=True, num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=8, shuffle=False, num_workers=workers)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(train_set.classes))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    start = time.perf_counter()
    model.train()
    for images, targets in train_loader:
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.inference_mode():
        for images, _ in val_loader:
            model(images)
    return {"epoch_seconds": time.perf_counter() - start, "train_seconds": train_seconds,
            "train_images": len(train_set), "val_images": len(val_set)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time train.py against jetson-inference's training recipe.")
    parser.add_argument("--data", default="", help="prepared data set (default: see module doc)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of ours (the baseline runs one)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers / decode threads")
    parser.add_argument("--model-dir", default="", help="keep our trained model here (default: discarded)")
    parser.add_argument("--output", default=os.path.join("bench", "results", "train_epoch.json"),
                        help="where the figures are written")
    return parser


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        data = find_data(args.data, scratch)
        print(f"== data: {data}")
        print("== ours: train.py")
        ours = time_ours(data, args.epochs, args.workers, args.model_dir or os.path.join(scratch, "ours"))
        print("== baseline: ImageFolder + DataLoader, jetson-inference recipe, one epoch")
        baseline = time_baseline(data, args.workers)
    steady = ours["epoch_seconds"][-1]
    last = ours["epochs"][-1]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "data": data, "baseline": baseline, "ours": ours,
        "ratio_epoch": baseline["epoch_seconds"] / steady,
    }
    print(f"\nbaseline epoch (train {baseline['train_images']} + val {baseline['val_images']} images): "
          f"{baseline['epoch_seconds']:.1f} s")
    for entry in ours["epochs"]:
        print(f"ours epoch {entry['epoch']}: {entry['epoch_seconds']:.1f} s ({entry['train_images_per_second']:.1f} img/s "
              f"training); val AUC {entry['val_auc']:.4f}, sensitivity {entry['val_sensitivity']:.4f}, "
              f"specificity {entry['val_specificity']:.4f} at threshold {entry['threshold']:.4f}")
    print(f"ours whole run incl. decoding the cache once, {len(ours['epochs'])} epochs, final evaluation: "
          f"{ours['run_seconds']:.1f} s")
    print(f"ratio (baseline epoch / our epoch {last['epoch']}): {result['ratio_epoch']:.2f}x")
    write_json(args.output, result)
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.train_epoch")
