"""Which parameters train: everything, the head only, the head until an epoch, or the last N blocks.

- ``--freeze-backbone``: only the new head (a linear layer, after dropout with ``--head-dropout``);
- ``--unfreeze-at E``: the head only until epoch E, then everything, the backbone at
  ``--backbone-lr-scale`` times the head's learning rate (the ResNet-50 notebooks' recipe);
- ``--train-last N``: the last N parameter blocks, where a block is a layer that owns parameters
  (a convolution, a batch norm, a linear layer), in the order the model defines them, as Keras
  counts layers for "retrain the last N layers".
Frozen batch-norm layers also keep their running statistics (they run in eval mode).
"""
from __future__ import annotations

from typing import Dict, List, Set, Tuple

import torch.nn as nn

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.networks.architectures import head_name
from cxr_jetson.train.config import TrainConfig


class FinetuneError(ToolkitError):
    """Fine-tuning options that cannot apply to this model or run."""


def parameter_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Modules that own parameters directly, in definition order."""
    return [(name, module) for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))]


def check_options(config: TrainConfig, model: nn.Module) -> None:
    """Refuse impossible combinations before any training starts."""
    chosen = [flag for flag, on in (("--freeze-backbone", config.freeze_backbone),
                                    ("--unfreeze-at", config.unfreeze_at is not None),
                                    ("--train-last", config.train_last is not None)) if on]
    if len(chosen) > 1:
        raise FinetuneError(f"{' and '.join(chosen)} cannot be combined; pick one")
    if config.unfreeze_at is not None and not 0 < config.unfreeze_at < config.epochs:
        raise FinetuneError(f"--unfreeze-at {config.unfreeze_at} must fall inside the run (1 to {config.epochs - 1} "
                            f"for --epochs {config.epochs})")
    if config.train_last is not None:
        blocks = len(parameter_blocks(model))
        if not 0 < config.train_last <= blocks:
            raise FinetuneError(f"--train-last {config.train_last}: {config.arch} has {blocks} parameter blocks")


def _trainable_modules(model: nn.Module, config: TrainConfig, epoch: int) -> List[nn.Module]:
    if config.train_last is not None:
        return [module for _, module in parameter_blocks(model)[-config.train_last:]]
    head_only = config.freeze_backbone or (config.unfreeze_at is not None and epoch < config.unfreeze_at)
    return [model.get_submodule(head_name(model))] if head_only else [model]


def apply(model: nn.Module, config: TrainConfig, epoch: int) -> Tuple[int, int]:
    """Set ``requires_grad`` for ``epoch``; returns (trainable, total) parameter counts."""
    trainable: Set[int] = {id(p) for module in _trainable_modules(model, config, epoch) for p in module.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def parameter_groups(model: nn.Module, config: TrainConfig) -> List[Dict]:
    """The head first (its learning rate is the one reported), then the backbone."""
    head = list(model.get_submodule(head_name(model)).parameters())
    ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in ids]
    scale = config.backbone_lr_scale if config.unfreeze_at is not None else 1.0
    return [{"params": head, "lr": config.lr}, {"params": backbone, "lr": config.lr * scale}]


def freeze_batch_norm_statistics(model: nn.Module) -> None:
    """After model.train(): frozen batch norms run in eval mode, so their statistics stay as they were."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                and not module.weight.requires_grad:
            module.eval()
