"""Optimizers and learning-rate schedules, chosen by name, with state that survives --resume.

The learning rate follows the linear scaling rule (Goyal et al., 2017): 0.01 for every 32 images of
the global batch (batch size x processes), so a GPU run with a large batch, or torchrun across
several GPUs, keeps the recipe's per-image step size. Batches above 32 warm up linearly over the
first epochs, which that rule needs to stay stable.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, List

import torch

from edge.cli import ToolkitError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "step", "onecycle", "plateau")
BASE_LR, BASE_BATCH, LARGE_BATCH_WARMUP_EPOCHS = 0.01, 32, 2


def global_batch(args: argparse.Namespace) -> int:
    """Images per optimizer step across all processes (torchrun sets WORLD_SIZE)."""
    return args.batch_size * int(os.environ.get("WORLD_SIZE", "1"))


def resolve_learning_rate(args: argparse.Namespace) -> None:
    """Fill in --lr and --warmup-epochs when left to the scaling rule."""
    batch = global_batch(args)
    if args.lr is None:
        args.lr = BASE_LR * batch / BASE_BATCH
    if args.warmup_epochs is None:
        args.warmup_epochs = LARGE_BATCH_WARMUP_EPOCHS if batch > BASE_BATCH and args.epochs > 4 else 0


def make_optimizer(args: argparse.Namespace, groups: List[Dict]) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    raise ToolkitError(f"invalid optimizer {args.optimizer}; choose from {', '.join(OPTIMIZERS)}")


class Schedule:
    """One interface over torch's schedulers: onecycle steps every batch, plateau watches the
    validation metric that picks model_best, the others step once per epoch."""

    def __init__(self, args: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.kind = args.scheduler
        epochs = max(args.epochs, 1)
        warmup = min(args.warmup_epochs or 0, epochs - 1) if self.kind in ("cosine", "step") else 0
        if self.kind == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)
        elif self.kind == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
        elif self.kind == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=epochs * max(steps_per_epoch, 1))
        elif self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=args.gamma, patience=args.plateau_patience)
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
