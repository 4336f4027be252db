"""What a training run carries from epoch to epoch (model, loss, optimizer, schedule, scaler, the
augmentation generator, the best epoch so far, the history), how it starts, and how --resume
restores it exactly."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.networks.model import model_classes
from cxr_jetson.train import finetune
from cxr_jetson.train.config import TrainConfig
from cxr_jetson.train.dataset import CachedSplit
from cxr_jetson.train.distributed import Distributed
from cxr_jetson.train.hardware import grad_scaler
from cxr_jetson.train.loop import steps_per_epoch
from cxr_jetson.train.optim import Schedule, make_optimizer


@dataclass
class TrainingRun:
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    scaler: Optional[Any]  # a GradScaler for fp16 on CUDA
    generator: torch.Generator
    best: Dict[str, Any]
    history: List[Dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0

    def rng_state(self) -> Dict[str, Any]:
        state = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, resume: Dict[str, Any]) -> None:
        """Optimizer, schedule, scaler, RNG, best epoch and history as the checkpoint left them."""
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scheduler.load_state_dict(resume["scheduler"])
        if self.scaler is not None and resume.get("scaler"):
            self.scaler.load_state_dict(resume["scaler"])
        state = resume["rng"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.best, self.history, self.start_epoch = resume["best"], list(resume["history"]), resume["epoch"] + 1


def class_weights(split: CachedSplit, num_classes: int, mode: str) -> Optional[torch.Tensor]:
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


def start_run(config: TrainConfig, resume: Optional[Dict[str, Any]], model: nn.Module, train_split: CachedSplit,
              amp_dtype: Optional[torch.dtype], ddp: Distributed) -> TrainingRun:
    """The run's state on ``ddp.device``: new, or restored from ``resume``."""
    device = ddp.device
    generator = torch.Generator().manual_seed(ddp.augmentation_seed(config.seed))
    print(f"=> {config.arch}: {sum(p.numel() for p in model.parameters()):,} parameters; device {device}; "
          f"autocast {amp_dtype or 'off'}; channels_last {config.channels_last}; seed {config.seed}")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    weights = class_weights(train_split, model_classes(model), config.class_weights)
    optimizer = make_optimizer(config, finetune.parameter_groups(model, config))
    run = TrainingRun(
        model=model, optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None,
                                      label_smoothing=config.label_smoothing),
        scheduler=Schedule(config, optimizer, steps_per_epoch(ddp.shard_size(len(train_split)), config.batch_size)),
        scaler=grad_scaler(device, amp_dtype), generator=generator,
        best={"metric": config.select_metric, "score": None, "value": None, "epoch": None})
    if resume is not None:
        run.restore(resume)
        if ddp.enabled:  # the checkpoint holds rank 0's augmentation stream only: each rank starts a new one
            generator.manual_seed(ddp.augmentation_seed(config.seed, run.start_epoch))
        print(f"=> resumed from {config.resume} after epoch {resume['epoch']}; best {run.best['metric']} "
              f"{run.best['value']:.4f} at epoch {run.best['epoch']}")
    return run
