"""What training shows each epoch: jetson-inference's summary lines, then the metric registry's
headline metrics; the same values as TensorBoard scalars when tensorboard is installed."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from cxr_jetson.core.metric_registry import HEADLINE, SHIFTED_PREFIX, headline_summary
from cxr_jetson.train.config import TrainConfig
from cxr_jetson.train.shift import TRAINING_PROXY


def print_epoch(epoch: int, entry: Dict[str, Any], metric: str) -> None:
    """jetson-inference's ``=> Epoch N`` block (the best epoch's selection metric starred)."""
    star = "*" if entry["is_best"] else ""
    print(f"=> Epoch {epoch}")
    print(f"  * Train Loss     {entry['train_loss']:.4e}")
    print(f"  * Train Accuracy {entry['train_accuracy']:.4f}")
    print(f"  * Val Loss       {entry['val_loss']:.4e}" + (star if metric == "loss" else ""))
    print(f"  * Val Accuracy   {entry['val_accuracy'] * 100:.4f}" + (star if metric == "accuracy" else ""))
    selected = next((m.label for m in HEADLINE if m.key == metric), None)
    threshold = f"  (threshold {entry['threshold']:.4f})" if entry.get("threshold") is not None else ""
    print(f"  * Val {headline_summary(entry, 'val_')}{threshold}" + (f"  [{selected}{star}]" if selected else ""))
    if f"val_{SHIFTED_PREFIX}auc" in entry:
        print(f"  * Shifted val {headline_summary(entry, 'val_' + SHIFTED_PREFIX)}  (the {TRAINING_PROXY} shift proxy)")
    print(f"  * Epoch time {entry['epoch_seconds']:.1f} s  (train {entry['train_seconds']:.1f} s, "
          f"{entry['train_images_per_second']:.1f} img/s)")


def tensorboard_writer(config: TrainConfig):
    """A SummaryWriter under MODEL_DIR/tensorboard/<time>, or None (turned off, or not installed)."""
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    log_dir = os.path.join(config.model_dir, "tensorboard", time.strftime("%Y%m%d_%H%M%S"))
    print(f"To start tensorboard run:  tensorboard --logdir={os.path.join(config.model_dir, 'tensorboard')}")
    return SummaryWriter(log_dir)


def log_scalars(writer: Optional[Any], entry: Dict[str, Any]) -> None:
    """Loss, accuracy and learning rate, then every headline metric (and its shifted copy) as val/<key>."""
    if writer is None:
        return
    keys = ["train_loss", "val_loss", "train_accuracy", "lr"]
    keys += [f"val_{prefix}{m.key}" for prefix in ("", SHIFTED_PREFIX) for m in HEADLINE]
    for key in keys:
        if isinstance(entry.get(key), float):
            writer.add_scalar(key.replace("_", "/", 1), entry[key], entry["epoch"])
    writer.flush()
