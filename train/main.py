"""train.py: train, resume, or evaluate a classifier; writes checkpoints, labels.txt and reports.

    python3 train.py --model-dir models/pneumonia data/pneumonia
    python3 train.py --model-dir models/pneumonia data/pneumonia --resume models/pneumonia/checkpoint.pth.tar
    python3 train.py --model-dir models/pneumonia data/pneumonia --evaluate --split test
    torchrun --standalone --nproc_per_node 4 train.py --model-dir models/pneumonia data/pneumonia
      (one process per GPU, DistributedDataParallel: train/distributed.py)
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from edge.cli import ToolkitError, run_cli
from edge.files import sha256_file
from edge.labels import write_labels
from edge.preprocess import PreprocessSpec
from train.args import get_args_parser
from train.augment import AUGMENTATIONS
from train.calibration import calibration_record, fit_temperature, fold_temperature, rescale_threshold
from train.checkpoint import BEST, CHECKPOINT, copy_atomic, load_checkpoint, preprocess_spec, save_atomic
from train.dataset import CachedSplit, find_classes, load_split
from train import finetune
from train.architectures import architecture
from train.distributed import Distributed, launched_rank, process_group
from train.engine import on_training_device, predict_probabilities, steps_per_epoch, train_one_epoch
from train.evaluate import evaluate_checkpoint, evaluate_model_dir, positive_class_index
from train.hardware import grad_scaler, select_amp, select_device
from train.metrics import choose_threshold, evaluate_probabilities, parse_policy
from train.model import build_model, model_classes, model_from_checkpoint
from train.model_card import write_model_card
from train.optim import Schedule, make_optimizer, resolve_learning_rate
from train.report import plot_training_curves, write_history_csv, write_json
from train.shift import TRAINING_PROXY, load_with_proxies


def _class_weights(split: CachedSplit, num_classes: int, mode: str) -> Optional[torch.Tensor]:
    """auto (balanced: n / (classes * n_c)), none, or one weight per class given as w0,w1,..."""
    if mode == "none":
        return None
    if mode in ("auto", "balanced"):
        counts = torch.tensor(split.class_counts(num_classes), dtype=torch.float32)
        return counts.sum() / (num_classes * counts.clamp(min=1))
    try:
        weights = [float(value) for value in mode.split(",")]
    except ValueError:
        weights = []
    if len(weights) != num_classes or min(weights) <= 0:
        raise ToolkitError(f"--class-weights {mode}: give auto, none or {num_classes} positive numbers, e.g. 1.5,0.5")
    return torch.tensor(weights)


def _selection_score(metrics: Dict[str, float], val_loss: float, metric: str) -> Tuple[float, float]:
    """Higher is better; validation loss breaks ties (AUC often saturates at 1.0 in-distribution)."""
    if metric == "loss":
        return (-val_loss, 0.0)
    value = metrics.get(metric, float("nan"))
    return (value if math.isfinite(value) else -math.inf, -val_loss)


SHIFTED_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy")


def _validation(model: nn.Module, splits: List[CachedSplit], spec: PreprocessSpec, device: torch.device,
                batch_size: int, channels_last: bool, positive: Optional[int],
                policy: str) -> Tuple[float, Optional[float], Dict[str, float], Dict[str, float]]:
    """Loss, threshold, metrics and the metrics that select model_best.

    ``splits`` is validation, then (with --robust-threshold) its shifted copy (train/shift.py). The
    threshold and the selection metric come from both pooled: in-distribution validation alone is
    over-confident, and a threshold tuned on it collapses on another site's images. The metrics are
    validation's, with the shifted copy's as ``shifted_*``.
    """
    probabilities = [predict_probabilities(model, split, spec, device, batch_size, channels_last,
                                           f"validate {split.name}") for split in splits]
    targets = [split.labels.numpy() for split in splits]
    clean_p, clean_t = probabilities[0], targets[0]
    loss = float(-np.mean(np.log(np.clip(clean_p[np.arange(len(clean_t)), clean_t], 1e-12, None))))
    pooled_p, pooled_t = np.concatenate(probabilities), np.concatenate(targets)
    threshold = (choose_threshold(pooled_p[:, positive], (pooled_t == positive).astype(int), policy)
                 if positive is not None else None)
    metrics = evaluate_probabilities(clean_p, clean_t, positive, threshold)
    for shifted_p, shifted_t in zip(probabilities[1:], targets[1:]):
        shifted = evaluate_probabilities(shifted_p, shifted_t, positive, threshold)
        metrics.update({f"shifted_{key}": shifted[key] for key in SHIFTED_KEYS if key in shifted})
    selection = evaluate_probabilities(pooled_p, pooled_t, positive, threshold) if len(splits) > 1 else metrics
    return loss, threshold, metrics, selection


def _tensorboard_writer(args: argparse.Namespace):
    if not args.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    log_dir = os.path.join(args.model_dir, "tensorboard", time.strftime("%Y%m%d_%H%M%S"))
    print(f"To start tensorboard run:  tensorboard --logdir={os.path.join(args.model_dir, 'tensorboard')}")
    return SummaryWriter(log_dir)


def _print_epoch(epoch: int, entry: Dict[str, Any], metric: str) -> None:
    star = "*" if entry["is_best"] else ""
    print(f"=> Epoch {epoch}")
    print(f"  * Train Loss     {entry['train_loss']:.4e}")
    print(f"  * Train Accuracy {entry['train_accuracy']:.4f}")
    print(f"  * Val Loss       {entry['val_loss']:.4e}" + (star if metric == "loss" else ""))
    print(f"  * Val Accuracy   {entry['val_accuracy'] * 100:.4f}" + (star if metric == "accuracy" else ""))
    print(f"  * Val AUC        {entry['val_auc']:.4f}" + (star if metric == "auc" else ""))
    if entry.get("threshold") is not None:
        print(f"  * Val Sensitivity {entry['val_sensitivity']:.4f}  Specificity {entry['val_specificity']:.4f}  "
              f"Balanced {entry['val_balanced_accuracy']:.4f}" + (star if metric == "balanced_accuracy" else "")
              + f"  (threshold {entry['threshold']:.4f})")
    if "val_shifted_auc" in entry:
        print(f"  * Shifted val AUC {entry['val_shifted_auc']:.4f}  "
              f"Sensitivity {entry['val_shifted_sensitivity']:.4f}  Specificity {entry['val_shifted_specificity']:.4f}  "
              f"(the {TRAINING_PROXY} shift proxy)")
    print(f"  * Epoch time {entry['epoch_seconds']:.1f} s  (train {entry['train_seconds']:.1f} s, "
          f"{entry['train_images_per_second']:.1f} img/s)")


def _rng_state(generator: torch.Generator) -> Dict[str, Any]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Run:
    """Everything a training run carries from epoch to epoch (and restores on --resume)."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    scaler: Optional[Any]  # a GradScaler for fp16 on CUDA
    generator: torch.Generator
    best: Dict[str, Any]
    history: List[Dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def _data_record(data: str, train_split: CachedSplit, val_split: CachedSplit) -> Dict[str, Any]:
    """What the model was trained on, for the model card: the manifest's hash pins the exact split."""
    manifest = os.path.join(data, "manifest.csv")
    return {"path": data, "manifest_sha256": sha256_file(manifest) if os.path.isfile(manifest) else None,
            "train_images": len(train_split), "val_images": len(val_split)}


def _checkpoint_payload(args: argparse.Namespace, epoch: int, classes: List[str], spec: PreprocessSpec,
                        run: _Run, entry: Dict[str, Any], val_metrics: Dict[str, float],
                        positive: Optional[int], data_record: Dict[str, Any]) -> Dict[str, Any]:
    return {
        # jetson-inference's keys
        "epoch": epoch, "arch": args.arch, "resolution": spec.resolution, "classes": classes,
        "num_classes": len(classes), "multi_label": False, "state_dict": run.model.state_dict(),
        "accuracy": {"train": entry["train_accuracy"], "val": entry["val_accuracy"] * 100},
        "loss": {"train": entry["train_loss"], "val": entry["val_loss"]},
        "optimizer": run.optimizer.state_dict(),
        # this toolkit's
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else None,
        "rng": _rng_state(run.generator), "best": run.best, "threshold": entry.get("threshold"),
        "threshold_policy": args.threshold_policy,
        "positive_class": classes[positive] if positive is not None else None,
        "preprocess": spec.to_dict(), "val_metrics": val_metrics, "history": run.history, "args": vars(args),
        "head_dropout": args.head_dropout, "data": data_record,
    }


def _load_data(args: argparse.Namespace, spec: PreprocessSpec,
               classes: List[str]) -> Tuple[CachedSplit, List[CachedSplit]]:
    """The train split, then validation and (with --robust-threshold) its shifted copy."""
    train_split = load_split(args.data, "train", classes, spec, args.workers)
    proxies = (TRAINING_PROXY,) if args.robust_threshold else ()
    val_splits = list(load_with_proxies(args.data, "val", classes, spec, args.workers, proxies).values())
    for split in (train_split, val_splits[0]):
        counts = ", ".join(f"{c} {n}" for c, n in zip(classes, split.class_counts(len(classes))))
        print(f"=> {split.name}: {len(split)} images ({counts})")
        for path in split.failures:
            print(f"   left out unreadable image: {path}")
    return train_split, val_splits


def _calibrate(checkpoint: Dict[str, Any], model: nn.Module, val_splits: List[CachedSplit], device: torch.device,
               batch_size: int, best_path: str) -> None:
    """Fit a temperature on the threshold's own images and fold it into model_best (train/calibration.py)."""
    spec = preprocess_spec(checkpoint)
    probabilities = np.concatenate([predict_probabilities(model, split, spec, device, batch_size, False,
                                                          f"calibrate on {split.name}") for split in val_splits])
    targets = np.concatenate([split.labels.numpy() for split in val_splits])
    fitted = fit_temperature(probabilities, targets)
    # Never sharpen: validation is the over-confident side of any shift, and with no mistakes on it the
    # likelihood keeps rising as T shrinks towards 0.
    temperature = max(1.0, fitted)
    fold_temperature(model, temperature)
    threshold = checkpoint.get("threshold")
    checkpoint.update(state_dict=model.state_dict(), threshold=rescale_threshold(threshold, temperature),
                      calibration=dict(calibration_record(probabilities, targets, temperature), fitted=fitted))
    save_atomic(checkpoint, best_path)
    record = checkpoint["calibration"]
    print(f"=> calibrated model_best: temperature {temperature:.3f} (fitted {fitted:.3f}); expected calibration error "
          f"{record['ece_before']:.4f} -> {record['ece_after']:.4f} on {len(targets)} images"
          + (f"; threshold {threshold:.4f} -> {checkpoint['threshold']:.4f} (same decisions)" if threshold else ""))


def _finish(args: argparse.Namespace, model: nn.Module, best_path: str, val_splits: List[CachedSplit],
            device: torch.device) -> None:
    """Calibrate model_best once, evaluate it on val (and its shifted copy) and draw the pictures next to the
    checkpoints."""
    checkpoint = load_checkpoint(best_path)
    model.load_state_dict(checkpoint["state_dict"])
    if args.calibrate and "calibration" not in checkpoint:  # a resumed run may finish on a calibrated best
        _calibrate(checkpoint, model, val_splits, device, args.batch_size, best_path)
    for split in val_splits:
        evaluate_checkpoint(checkpoint, model, split, device, args.model_dir, args.batch_size)
    print(f"=> model card: {write_model_card(args.model_dir)}")


def _build(args: argparse.Namespace, resume: Optional[Dict[str, Any]], classes: List[str]) -> nn.Module:
    """The model to train, checked against the fine-tuning options before any image is decoded."""
    torch.manual_seed(args.seed)
    if resume is None:
        model = build_model(args.arch, len(classes), args.pretrained, args.weights, args.head_dropout)
    else:
        model = model_from_checkpoint(resume)
    finetune.check_options(args, model)
    return model


def _start_run(args: argparse.Namespace, resume: Optional[Dict[str, Any]], model: nn.Module,
               train_split: CachedSplit, device: torch.device, amp_dtype: Optional[torch.dtype],
               ddp: Distributed) -> _Run:
    generator = torch.Generator().manual_seed(ddp.augmentation_seed(args.seed))
    print(f"=> {args.arch}: {sum(p.numel() for p in model.parameters()):,} parameters; device {device}; "
          f"autocast {amp_dtype or 'off'}; channels_last {args.channels_last}; seed {args.seed}")
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    weights = _class_weights(train_split, model_classes(model), args.class_weights)
    optimizer = make_optimizer(args, finetune.parameter_groups(model, args))
    run = _Run(model=model,
               criterion=nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                             label_smoothing=args.label_smoothing),
               optimizer=optimizer,
               scheduler=Schedule(args, optimizer, steps_per_epoch(ddp.shard_size(len(train_split)), args.batch_size)),
               scaler=grad_scaler(device, amp_dtype),
               generator=generator,
               best={"metric": args.select_metric, "score": None, "value": None, "epoch": None})
    if resume is not None:
        run.optimizer.load_state_dict(resume["optimizer"])
        run.scheduler.load_state_dict(resume["scheduler"])
        if run.scaler is not None and resume.get("scaler"):
            run.scaler.load_state_dict(resume["scaler"])
        _restore_rng(resume["rng"], generator)
        run.best, run.history, run.start_epoch = resume["best"], list(resume["history"]), resume["epoch"] + 1
        if ddp.enabled:  # the checkpoint holds rank 0's augmentation stream only: each rank starts a new one
            generator.manual_seed(ddp.augmentation_seed(args.seed, run.start_epoch))
        print(f"=> resumed from {args.resume} after epoch {resume['epoch']}; best {run.best['metric']} "
              f"{run.best['value']:.4f} at epoch {run.best['epoch']}")
    return run


def _log_scalars(writer, entry: Dict[str, Any]) -> None:
    if writer is None:
        return
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_auc", "val_sensitivity",
                "val_specificity", "lr"):
        if isinstance(entry.get(key), float):
            writer.add_scalar(key.replace("_", "/", 1), entry[key], entry["epoch"])
    writer.flush()


def train(args: argparse.Namespace) -> int:
    with process_group(select_device(args.device)) as ddp:
        return _train(args, ddp)


def _train(args: argparse.Namespace, ddp: Distributed) -> int:
    """One process's part of training: all of it, or under torchrun one rank's (rank 0 alone writes)."""
    device = ddp.device
    if ddp.enabled:
        print(f"=> DistributedDataParallel: {ddp.world_size} processes, backend {ddp.backend}, "
              f"global batch {ddp.world_size} x {args.batch_size} = {ddp.world_size * args.batch_size}")
    amp_dtype = select_amp(args.amp, device)
    parse_policy(args.threshold_policy)
    resolve_learning_rate(args)
    resume = load_checkpoint(_resume_path(args.resume)) if args.resume else None
    if resume is not None:
        args.arch, args.resolution = resume["arch"], int(resume.get("resolution", args.resolution))
    args.resolution = args.resolution or architecture(args.arch).resolution
    spec = (preprocess_spec(resume) if resume is not None
            else PreprocessSpec(resolution=args.resolution, equalize=args.equalize))
    args.equalize = spec.equalize
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") if resume is None else resume["args"]["seed"]
    classes = find_classes(os.path.join(args.data, "train"))
    print(f"=> dataset classes:  {len(classes)} {classes}")
    if resume is not None and resume["classes"] != classes:
        raise ToolkitError(f"the checkpoint was trained on classes {resume['classes']}, the data has {classes}")
    model = _build(args, resume, classes)
    if ddp.is_main:
        os.makedirs(args.model_dir, exist_ok=True)
    train_split, val_splits = _load_data(args, spec, classes)
    positive = positive_class_index(classes)
    if ddp.is_main:
        write_labels(os.path.join(args.model_dir, "labels.txt"), classes)
        print(f"saved class labels to:  {os.path.join(args.model_dir, 'labels.txt')}")
    run = _start_run(args, resume, model, train_split, device, amp_dtype, ddp)
    data_record = _data_record(args.data, train_split, val_splits[0])
    train_split = on_training_device(train_split, device)
    if ddp.is_main:
        write_json(os.path.join(args.model_dir, "args.json"), vars(args))
    writer = _tensorboard_writer(args) if ddp.is_main else None
    checkpoint_path = os.path.join(args.model_dir, CHECKPOINT)
    best_path = os.path.join(args.model_dir, BEST)
    augment = AUGMENTATIONS[args.augment]
    trainable_before = None
    for epoch in range(run.start_epoch, args.epochs):
        epoch_start = time.perf_counter()
        trainable, total = finetune.apply(run.model, args, epoch)
        if trainable != trainable_before:
            print(f"=> epoch {epoch}: trainable parameters: {trainable:,} of {total:,}")
            trainable_before = trainable
            # DDP reduces the gradients of the parameters that train when it wraps: wrap again when they change.
            train_model = ddp.wrap(run.model)
        lr = run.optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(train_model, train_split, run.criterion, run.optimizer, epoch, spec, augment,
                                run.generator, device, args.batch_size, amp_dtype, run.scaler, args.channels_last,
                                args.print_freq, run.scheduler.after_batch,
                                order=ddp.shard_order(len(train_split), args.seed, epoch))
        stats = ddp.job_stats(stats)
        # Rank 0 validates its own weights (the ones it saves); every rank decides from that result.
        val_loss, threshold, metrics, selection = ddp.from_main(_validation, run.model, val_splits, spec, device,
                                                                args.batch_size, args.channels_last, positive,
                                                                args.threshold_policy)
        score = _selection_score(selection, val_loss, args.select_metric)
        run.scheduler.after_epoch(score[0])
        is_best = run.best["score"] is None or tuple(score) > tuple(run.best["score"])
        if is_best:
            value = -val_loss if args.select_metric == "loss" else selection[args.select_metric]
            run.best = {"metric": args.select_metric, "score": list(score), "value": float(value), "epoch": epoch}
        entry = {"epoch": epoch, "lr": lr, "train_loss": stats.loss, "train_accuracy": stats.accuracy,
                 "train_seconds": stats.seconds, "train_images_per_second": stats.images_per_second,
                 "val_loss": val_loss, "threshold": threshold, "is_best": is_best,
                 "epoch_seconds": time.perf_counter() - epoch_start,
                 **{f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}}
        run.history.append(entry)
        if ddp.is_main:
            save_atomic(_checkpoint_payload(args, epoch, classes, spec, run, entry, metrics, positive, data_record),
                        checkpoint_path)
            if is_best:
                copy_atomic(checkpoint_path, best_path)
            plot_training_curves(run.history, os.path.join(args.model_dir, "training_curves.png"))
            write_history_csv(run.history, os.path.join(args.model_dir, "history.csv"))
        _print_epoch(epoch, entry, args.select_metric)
        print(f"saved {'best model' if is_best else 'checkpoint'} to:  {best_path if is_best else checkpoint_path}")
        _log_scalars(writer, entry)
        if args.early_stop and epoch - run.best["epoch"] >= args.early_stop:
            print(f"=> early stop: no better {args.select_metric} for {args.early_stop} epoch(s) since epoch "
                  f"{run.best['epoch']}; model_best.pth.tar is that epoch's")
            break
    if writer is not None:
        writer.close()
    if ddp.is_main:  # model_best is on rank 0's disk; another node may not see it
        if not os.path.isfile(best_path):
            raise ToolkitError(f"no epochs were trained (--epochs {args.epochs}); nothing to report")
        _finish(args, run.model, best_path, val_splits, device)
    return 0


def _resume_path(path: str) -> str:
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def evaluate(args: argparse.Namespace) -> int:
    evaluate_model_dir(args.model_dir, args.data, args.split, select_device(args.device), args.batch_size,
                       args.workers, _resume_path(args.resume) if args.resume else None)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.epochs < 1 and not args.evaluate:
        raise ToolkitError("--epochs must be at least 1")
    if args.batch_size < 2:
        raise ToolkitError("--batch-size must be at least 2 (batch norm needs two images per batch)")
    if args.evaluate:
        # One process's work: started by torchrun, rank 0 evaluates and the others have nothing to do.
        return evaluate(args) if launched_rank() == 0 else 0
    return train(args)


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "train.py")
