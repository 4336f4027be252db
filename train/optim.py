"""Optimizers and learning-rate schedules, chosen by name, with state that survives --resume.

The learning rate and warm-up arrive resolved (train/config.py applies the linear scaling rule), so
a GPU run with a large batch, or torchrun across several GPUs, keeps the recipe's per-image step.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.train.config import TrainConfig

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "step", "onecycle", "plateau")


def make_optimizer(config: TrainConfig, groups: List[Dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    raise ToolkitError(f"invalid optimizer {config.optimizer}; choose from {', '.join(OPTIMIZERS)}")


class Schedule:
    """One interface over torch's schedulers: onecycle steps every batch, plateau watches the
    validation metric that picks model_best, the others step once per epoch."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.kind = config.scheduler
        epochs = max(config.epochs, 1)
        warmup = min(config.warmup_epochs or 0, epochs - 1) if self.kind in ("cosine", "step") else 0
        if self.kind == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
        elif self.kind == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        elif self.kind == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=epochs * max(steps_per_epoch, 1))
        elif self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=config.gamma, patience=config.plateau_patience)
        else:
            raise ToolkitError(f"invalid scheduler {self.kind}; choose from {', '.join(SCHEDULERS)}")
        if warmup:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
            self.scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, self.scheduler], [warmup])

    def after_batch(self) -> None:
        if self.kind == "onecycle":
            self.scheduler.step()

    def after_epoch(self, score: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(score)
        elif self.kind != "onecycle":
            self.scheduler.step()

    def state_dict(self) -> Dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Dict) -> None:
        self.scheduler.load_state_dict(state)
