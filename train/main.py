"""train.py: train, resume, or evaluate a classifier; writes checkpoints, labels.txt and reports.

    python3 train.py --model-dir models/pneumonia data/pneumonia
    python3 train.py --model-dir models/pneumonia data/pneumonia --resume models/pneumonia/checkpoint.pth.tar
    python3 train.py --model-dir models/pneumonia data/pneumonia --evaluate --split test
    torchrun --standalone --nproc_per_node 4 train.py --model-dir models/pneumonia data/pneumonia
      (one process per GPU, DistributedDataParallel: train/distributed.py)

This module is the orchestration: the parsed arguments become a TrainConfig once (train/config.py),
the run is set up, then each epoch trains (train/loop.py), validates (train/validation.py), prints
(train/console.py) and saves (networks/checkpoint.py); model_best is calibrated and evaluated at the end.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import class_to_record, positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import check_writable, sha256_file
from cxr_jetson.core.input_gate import parse_age_range
from cxr_jetson.core.labels import write_labels
from cxr_jetson.core.names import BEST_CHECKPOINT, LABELS_FILE, LAST_CHECKPOINT
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.networks.checkpoint import copy_atomic, load_checkpoint, save_atomic, training_checkpoint
from cxr_jetson.networks.model import build_model, model_from_checkpoint
from cxr_jetson.train import finetune
from cxr_jetson.train.args import get_args_parser
from cxr_jetson.train.augment import AUGMENTATIONS
from cxr_jetson.train.calibration import calibrate_best
from cxr_jetson.train.config import TrainConfig, preprocessing, resolve
from cxr_jetson.train.console import log_scalars, print_epoch, tensorboard_writer
from cxr_jetson.train.dataset import CachedSplit, find_classes, load_split
from cxr_jetson.train.distributed import Distributed, launched_rank, process_group
from cxr_jetson.train.evaluate import evaluate_checkpoint, evaluate_model_dir
from cxr_jetson.train.hardware import keep_freed_memory, select_amp, select_device
from cxr_jetson.train.input_gate import fit_input_gate
from cxr_jetson.train.loop import StepSettings, on_training_device, train_one_epoch
from cxr_jetson.train.metrics import parse_policy
from cxr_jetson.train.model_card import write_model_card
from cxr_jetson.train.report import plot_training_curves, write_history_csv, write_json
from cxr_jetson.train.shift import TRAINING_PROXY, load_with_proxies
from cxr_jetson.train.site_shift import batch_norm_layers, reestimate_batch_norm
from cxr_jetson.train.state import TrainingRun, start_run
from cxr_jetson.train.validation import Validation, selection_score, validate


@dataclass
class _Session:
    """One process's training run, set up once; the epoch loop reads it."""

    config: TrainConfig
    ddp: Distributed
    spec: PreprocessSpec
    classes: List[str]
    positive: Optional[int]
    run: TrainingRun
    train_split: CachedSplit
    val_splits: List[CachedSplit]   # validation, then (with --robust-threshold) its shifted copy
    settings: StepSettings
    data_record: Dict[str, Any]
    writer: Optional[Any]           # TensorBoard, on rank 0

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.config.model_dir, LAST_CHECKPOINT)

    @property
    def best_path(self) -> str:
        return os.path.join(self.config.model_dir, BEST_CHECKPOINT)


def _load_data(config: TrainConfig, spec: PreprocessSpec,
               classes: List[str]) -> Tuple[CachedSplit, List[CachedSplit]]:
    """The train split, then validation and (with --robust-threshold) its shifted copy."""
    train_split = load_split(config.data, "train", classes, spec, config.workers)
    proxies = (TRAINING_PROXY,) if config.robust_threshold else ()
    val_splits = list(load_with_proxies(config.data, "val", classes, spec, config.workers, proxies).values())
    for split in (train_split, val_splits[0]):
        counts = ", ".join(f"{c} {n}" for c, n in zip(classes, split.class_counts(len(classes))))
        print(f"=> {split.name}: {len(split)} images ({counts})")
        for path in split.failures:
            print(f"   left out unreadable image: {path}")
    return train_split, val_splits


def _data_record(data: str, train_split: CachedSplit, val_split: CachedSplit) -> Dict[str, Any]:
    """What the model was trained on, for the model card: the manifest's hash pins the exact split."""
    manifest = os.path.join(data, "manifest.csv")
    return {"path": data, "manifest_sha256": sha256_file(manifest) if os.path.isfile(manifest) else None,
            "train_images": len(train_split), "val_images": len(val_split)}


def _build(config: TrainConfig, resume: Optional[Dict[str, Any]], classes: List[str]) -> nn.Module:
    """The model to train, checked against the fine-tuning options before any image is decoded."""
    torch.manual_seed(config.seed)
    if resume is None:
        model = build_model(config.arch, len(classes), config.pretrained, config.weights, config.head_dropout)
    else:
        model = model_from_checkpoint(resume)
    finetune.check_options(config, model)
    return model


def _check_model_dir(config: TrainConfig) -> None:
    """Before any work: the model folder can be written, and a new run never silently replaces a trained model."""
    check_writable(config.model_dir, "--model-dir", is_folder=True)
    trained = os.path.join(config.model_dir, BEST_CHECKPOINT)
    if not config.resume and not config.overwrite and os.path.isfile(trained):
        raise ToolkitError(f"{config.model_dir} already holds a trained model ({BEST_CHECKPOINT}): continue it with "
                           f"--resume {config.model_dir}, replace it with --overwrite, or pick another --model-dir")


def _resume_path(path: str) -> str:
    return os.path.join(path, LAST_CHECKPOINT) if os.path.isdir(path) else path


def _setup(config: TrainConfig, ddp: Distributed) -> _Session:
    """Resolve the config, build the model, decode the data once and start (or restore) the run."""
    if ddp.enabled:
        print(f"=> DistributedDataParallel: {ddp.world_size} processes, backend {ddp.backend}, "
              f"global batch {ddp.world_size} x {config.batch_size} = {ddp.world_size * config.batch_size}")
    amp_dtype = select_amp(config.amp, ddp.device)
    if ddp.device.type == "cpu" and keep_freed_memory():
        print("=> host memory: freed blocks are kept for the next step (glibc mallopt), not mapped again each step")
    parse_policy(config.threshold_policy)
    _check_model_dir(config)
    resume = load_checkpoint(_resume_path(config.resume)) if config.resume else None
    start = resume["epoch"] + 1 if resume is not None else 0
    if config.start_epoch is not None and config.start_epoch != start:
        raise ToolkitError(f"--start-epoch {config.start_epoch}: this run starts at epoch {start}"
                           + (" (the checkpoint's next)" if resume is not None else "") + "; leave --start-epoch out")
    config = resolve(config, ddp.world_size, resume, drawn_seed=int.from_bytes(os.urandom(4), "little"))
    spec = preprocessing(config, resume)
    classes = find_classes(os.path.join(config.data, "train"))
    print(f"=> dataset classes:  {len(classes)} {classes}")
    if resume is not None and resume["classes"] != classes:
        raise ToolkitError(f"the checkpoint was trained on classes {resume['classes']}, the data has {classes}")
    model = _build(config, resume, classes)
    if ddp.is_main:
        os.makedirs(config.model_dir, exist_ok=True)
    train_split, val_splits = _load_data(config, spec, classes)
    if ddp.is_main:
        write_labels(os.path.join(config.model_dir, LABELS_FILE), classes)
        print(f"saved class labels to:  {os.path.join(config.model_dir, LABELS_FILE)}")
    run = start_run(config, resume, model, train_split, amp_dtype, ddp)
    data_record = _data_record(config.data, train_split, val_splits[0])
    if ddp.is_main:
        write_json(os.path.join(config.model_dir, "args.json"), config.to_dict())
    settings = StepSettings(spec, AUGMENTATIONS[config.augment], ddp.device, config.batch_size, amp_dtype,
                            config.channels_last, config.print_freq, config.mixup)
    return _Session(config, ddp, spec, classes, positive_index(classes, class_to_record(classes)), run,
                    on_training_device(train_split, ddp.device), val_splits, settings, data_record,
                    tensorboard_writer(config) if ddp.is_main else None)


def _save(session: _Session, epoch: int, entry: Dict[str, Any], validation: Validation) -> None:
    """checkpoint.pth.tar every epoch, model_best.pth.tar when it is the best, and the curves (rank 0)."""
    config, run = session.config, session.run
    save_atomic(training_checkpoint(
        epoch=epoch, arch=config.arch, classes=session.classes, spec=session.spec, state_dict=run.model.state_dict(),
        optimizer=run.optimizer.state_dict(), accuracy={"train": entry["train_accuracy"],
                                                        "val": entry["val_accuracy"] * 100},
        loss={"train": entry["train_loss"], "val": entry["val_loss"]}, threshold=validation.threshold,
        threshold_policy=config.threshold_policy, scheduler=run.scheduler.state_dict(),
        scaler=run.scaler.state_dict() if run.scaler else None, rng=run.rng_state(), best=run.best,
        history=run.history, val_metrics=validation.metrics, args=config.to_dict(),
        head_dropout=config.head_dropout, data=session.data_record), session.checkpoint_path)
    if entry["is_best"]:
        copy_atomic(session.checkpoint_path, session.best_path)
    plot_training_curves(run.history, os.path.join(config.model_dir, "training_curves.png"))
    write_history_csv(run.history, os.path.join(config.model_dir, "history.csv"))


def _epoch(session: _Session, epoch: int, train_model: nn.Module) -> Dict[str, Any]:
    """Train one epoch, validate, keep the best; returns the epoch's history entry."""
    config, run, ddp = session.config, session.run, session.ddp
    epoch_start = time.perf_counter()
    lr = run.optimizer.param_groups[0]["lr"]
    stats = ddp.job_stats(train_one_epoch(train_model, session.train_split, run, epoch, session.settings,
                                          order=ddp.shard_order(len(session.train_split), config.seed, epoch)))
    # Rank 0 validates its own weights (the ones it saves); every rank decides from that result.
    validation = ddp.from_main(validate, run.model, session.val_splits, session.spec, ddp.device, config.batch_size,
                               config.channels_last, session.positive, config.threshold_policy,
                               session.settings.amp_dtype)
    score = selection_score(validation, config.select_metric)
    run.scheduler.after_epoch(score[0])
    is_best = run.best["score"] is None or tuple(score) > tuple(run.best["score"])
    if is_best:
        value = -validation.loss if config.select_metric == "loss" else validation.selection[config.select_metric]
        run.best = {"metric": config.select_metric, "score": list(score), "value": float(value), "epoch": epoch}
    entry = {"epoch": epoch, "lr": lr, "train_loss": stats.loss, "train_accuracy": stats.accuracy,
             "train_seconds": stats.seconds, "train_images_per_second": stats.images_per_second,
             "val_loss": validation.loss, "threshold": validation.threshold, "is_best": is_best,
             "epoch_seconds": time.perf_counter() - epoch_start,
             **{f"val_{k}": v for k, v in validation.metrics.items() if isinstance(v, float)}}
    run.history.append(entry)
    if ddp.is_main:
        _save(session, epoch, entry, validation)
    print_epoch(epoch, entry, config.select_metric)
    print(f"saved {'best model' if is_best else 'checkpoint'} to:  "
          f"{session.best_path if is_best else session.checkpoint_path}")
    log_scalars(session.writer, entry)
    return entry


def _recalibrate_batch_norm(session: _Session, checkpoint: Dict[str, Any], model: nn.Module) -> None:
    """model_best's batch-norm statistics measured again, in fp32, on every training image as the device sees it.
    During training the running statistics follow augmented batches (zoom, contrast, gamma, noise, blur), which
    the device never sees; the learned weights do not change."""
    split = session.train_split
    layers = reestimate_batch_norm(model, split.images.cpu().numpy(), session.spec, session.ddp.device,
                                   session.config.batch_size)
    checkpoint.update(state_dict=model.state_dict(), batch_norm={"recalibrated_on": "train", "images": len(split),
                                                                 "layers": layers})
    print(f"=> model_best's batch-norm statistics ({layers} layers) measured on the {len(split)} training images "
          "without augmentation")


def _settle_best(session: _Session, checkpoint: Dict[str, Any], model: nn.Module) -> None:
    """model_best's batch-norm statistics on unaugmented training images (with --recalibrate-bn), then its threshold
    and metrics from its fp32 probabilities (the epochs validated under autocast), then its calibration on those
    probabilities; written back to model_best."""
    config = session.config
    if config.recalibrate_bn and batch_norm_layers(model):
        _recalibrate_batch_norm(session, checkpoint, model)
    final = validate(model, session.val_splits, session.spec, session.ddp.device, config.batch_size, False,
                     session.positive, config.threshold_policy)
    epoch_threshold = checkpoint.get("threshold")
    if final.threshold is not None and epoch_threshold is not None and final.threshold != epoch_threshold:
        print(f"=> model_best's threshold in fp32: {final.threshold:.4f} (its epoch's validation under autocast: "
              f"{epoch_threshold:.4f})")
    checkpoint.update(threshold=final.threshold, val_metrics=final.metrics)
    if config.calibrate:
        targets = [split.labels.numpy() for split in session.val_splits]
        calibrate_best(checkpoint, model, final.probabilities, targets)
    save_atomic(checkpoint, session.best_path)


def _finish(session: _Session) -> None:
    """Settle model_best's threshold in fp32 and calibrate it, once; evaluate it on val (and its shifted copy) and
    draw the pictures next to the checkpoints."""
    config, model = session.config, session.run.model
    if not os.path.isfile(session.best_path):
        raise ToolkitError(f"no epochs were trained (--epochs {config.epochs}); nothing to report")
    checkpoint = load_checkpoint(session.best_path)
    model.load_state_dict(checkpoint["state_dict"])
    if "calibration" not in checkpoint:  # a resumed run may finish on a best already settled and calibrated
        _settle_best(session, checkpoint, model)
    for split in session.val_splits:
        evaluate_checkpoint(checkpoint, model, split, session.ddp.device, config.model_dir, config.batch_size)
    if config.input_gate:
        fit_input_gate(config, session.best_path)
    print(f"=> model card: {write_model_card(config.model_dir)}")


def _train(config: TrainConfig, ddp: Distributed) -> int:
    """One process's part of training: all of it, or under torchrun one rank's (rank 0 alone writes)."""
    session = _setup(config, ddp)
    config, run = session.config, session.run
    trainable_before = None
    for epoch in range(run.start_epoch, config.epochs):
        trainable, total = finetune.apply(run.model, config, epoch)
        if trainable != trainable_before:
            print(f"=> epoch {epoch}: trainable parameters: {trainable:,} of {total:,}")
            trainable_before = trainable
            # DDP reduces the gradients of the parameters that train when it wraps: wrap again when they change.
            train_model = ddp.wrap(run.model)
        _epoch(session, epoch, train_model)
        if config.early_stop and epoch - run.best["epoch"] >= config.early_stop:
            print(f"=> early stop: no better {config.select_metric} for {config.early_stop} epoch(s) since epoch "
                  f"{run.best['epoch']}; {BEST_CHECKPOINT} is that epoch's")
            break
    if session.writer is not None:
        session.writer.close()
    if ddp.is_main:  # model_best is on rank 0's disk; another node may not see it
        _finish(session)
    return 0


def train(config: TrainConfig) -> int:
    with process_group(select_device(config.device)) as ddp:
        return _train(config, ddp)


def evaluate(config: TrainConfig) -> int:
    evaluate_model_dir(config.model_dir, config.data, config.split, select_device(config.device), config.batch_size,
                       config.workers, _resume_path(config.resume) if config.resume else None)
    return 0


def main(args: argparse.Namespace) -> int:
    config = TrainConfig.from_args(args)
    if args.dataset_type != "folder" or args.multi_label:
        raise ToolkitError("this trainer reads one class per image from DIR/train/<CLASS>/ (--dataset-type folder); "
                           "--multi-label and the nuswide/voc layouts are not supported")
    if config.epochs < 1 and not config.evaluate:
        raise ToolkitError("--epochs must be at least 1")
    if config.batch_size < 1:
        raise ToolkitError("--batch-size must be at least 1")
    if config.mixup < 0:
        raise ToolkitError(f"--mixup {config.mixup}: ALPHA of Beta(ALPHA, ALPHA) must be positive, or 0 for off")
    parse_age_range(config.population_age)  # a typo must stop the run before training, not after it
    if config.batch_size == 1:
        # Convolutional batch norms normalise over batch x height x width: one image per step trains (as in
        # jetson-inference), with noisier statistics than a larger batch.
        print("=> --batch-size 1: batch norm statistics come from one image per step, which makes them noisy; "
              "a batch of 16-64 trains faster and steadier where memory allows")
    if config.evaluate:
        # One process's work: started by torchrun, rank 0 evaluates and the others have nothing to do.
        return evaluate(config) if launched_rank() == 0 else 0
    return train(config)


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "train.py")
