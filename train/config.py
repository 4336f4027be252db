"""Training options, typed: built once from train.py's command line, completed by one pure function,
and passed down; nothing changes them afterwards.

``TrainConfig.from_args`` takes the parsed arguments as they are; ``resolve`` fills in what the run
decides (the learning rate and warm-up from the global batch, the resolution from the architecture,
and on --resume the architecture, resolution, equalisation and seed of the checkpoint), returning a
new config. The resolved config is what the checkpoint, args.json and the model card record.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cxr_jetson.core.names import DEFAULT_MODEL_DIR
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.networks.architectures import architecture
from cxr_jetson.networks.checkpoint import preprocess_spec
from cxr_jetson.train.augment import DEFAULT_AUGMENTATION
from cxr_jetson.train.metrics import DEFAULT_POLICY

# The linear scaling rule (Goyal et al., 2017): 0.01 for every 32 images of the global batch; batches
# above 32 warm up over the first epochs, which that rule needs to stay stable.
BASE_LR, BASE_BATCH, LARGE_BATCH_WARMUP_EPOCHS = 0.01, 32, 2


@dataclass(frozen=True)
class TrainConfig:
    data: str
    model_dir: str = DEFAULT_MODEL_DIR
    arch: str = "resnet18"
    resolution: Optional[int] = None       # None: the architecture's
    equalize: str = "hist"                 # the default recipe: see the README
    augment: str = DEFAULT_AUGMENTATION
    workers: int = min(4, os.cpu_count() or 1)
    epochs: int = 35
    batch_size: int = 32                   # per process
    lr: Optional[float] = None             # None: the scaling rule's
    warmup_epochs: Optional[int] = None    # None: 2 above a global batch of 32, else 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    scheduler: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    plateau_patience: int = 3
    early_stop: int = 0
    label_smoothing: float = 0.0
    mixup: float = 0.0                     # Beta(alpha, alpha) of mixup; 0: off
    head_dropout: float = 0.0
    freeze_backbone: bool = False
    unfreeze_at: Optional[int] = None
    backbone_lr_scale: float = 0.1
    train_last: Optional[int] = None
    print_freq: int = 10
    resume: str = ""
    overwrite: bool = False                # a new run may replace a trained model in model_dir
    evaluate: bool = False
    split: str = "val"
    pretrained: bool = True
    weights: Optional[str] = None
    seed: Optional[int] = None             # None: drawn by the run
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    class_weights: str = "auto"
    threshold_policy: str = DEFAULT_POLICY
    robust_threshold: bool = True
    calibrate: bool = True
    recalibrate_bn: bool = False
    input_gate: bool = True
    population_age: str = "1-5"
    select_metric: str = "auc"
    tensorboard: bool = True
    start_epoch: Optional[int] = None      # jetson-inference's --start-epoch: checked against where the run starts

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        values = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        gpu = getattr(args, "gpu", None)  # jetson-inference's --gpu N
        if gpu is not None and values.get("device", "auto") == "auto":
            values["device"] = f"cuda:{gpu}"
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def resolve(config: TrainConfig, world_size: int, resume: Optional[Dict[str, Any]], drawn_seed: int) -> TrainConfig:
    """``config`` with every default the run decides filled in (see the module docstring)."""
    arch, resolution, equalize, seed = config.arch, config.resolution, config.equalize, config.seed
    if resume is not None:
        arch, resolution = resume["arch"], int(resume.get("resolution", resolution))
        equalize = preprocess_spec(resume).equalize
        seed = resume["args"]["seed"] if seed is None else seed
    global_batch = config.batch_size * world_size
    warmup = config.warmup_epochs
    if warmup is None:
        warmup = LARGE_BATCH_WARMUP_EPOCHS if global_batch > BASE_BATCH and config.epochs > 4 else 0
    return dataclasses.replace(
        config, arch=arch, resolution=resolution or architecture(arch).resolution, equalize=equalize,
        seed=drawn_seed if seed is None else seed, warmup_epochs=warmup,
        lr=BASE_LR * global_batch / BASE_BATCH if config.lr is None else config.lr)


def preprocessing(config: TrainConfig, resume: Optional[Dict[str, Any]]) -> PreprocessSpec:
    """The preprocessing the run trains with: the checkpoint's on --resume, else the resolved config's."""
    if resume is not None:
        return preprocess_spec(resume)
    return PreprocessSpec(resolution=config.resolution, equalize=config.equalize)
