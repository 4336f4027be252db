"""Evaluate a checkpoint on a split at its own threshold: metrics, pictures, and the data for reports."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from edge.cli import ToolkitError
from edge.model_info import default_positive_class
from train.checkpoint import BEST, load_checkpoint, preprocess_spec
from train.dataset import CachedSplit, load_split
from train.engine import predict_probabilities
from train.metrics import confusion, evaluate_probabilities
from train.model import model_from_checkpoint
from train.report import write_evaluation


def positive_class_index(classes: List[str]) -> Optional[int]:
    name = default_positive_class(classes)
    return classes.index(name) if name is not None else None


@dataclass
class Evaluation:
    classes: List[str]
    positive: Optional[int]
    threshold: Optional[float]
    metrics: Dict[str, float]
    matrix: List[List[int]]
    probabilities: np.ndarray
    targets: np.ndarray


def evaluate_checkpoint(checkpoint: Dict[str, Any], model: nn.Module, split: CachedSplit, device: torch.device,
                        model_dir: str, batch_size: int) -> Evaluation:
    """Metrics of ``model`` on ``split`` at the checkpoint's own threshold (never re-tuned on the split);
    metrics.json and the pictures go to MODEL_DIR/eval_<split>/."""
    classes = list(checkpoint["classes"])
    positive = positive_class_index(classes)
    threshold = checkpoint.get("threshold")
    if positive is not None and threshold is None:
        threshold = 0.5
    probabilities = predict_probabilities(model, split, preprocess_spec(checkpoint), device, batch_size, False,
                                          f"evaluate {split.name}")
    targets = split.labels.numpy()
    metrics = evaluate_probabilities(probabilities, targets, positive, threshold)
    matrix = confusion(probabilities, targets, positive, threshold)
    out_dir = os.path.join(model_dir, f"eval_{split.name.replace(os.sep, '_')}")
    files = write_evaluation(out_dir, split.name, classes, probabilities, targets, metrics, matrix, positive,
                             checkpoint.get("history", []),
                             {"checkpoint_epoch": checkpoint.get("epoch"), "threshold_policy": checkpoint.get(
                                 "threshold_policy"), "images": split.paths})
    summary = {k: round(v, 4) for k, v in metrics.items()
               if k in ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy") and math.isfinite(v)}
    print(f"=> {split.name} ({len(split)} images, threshold {threshold}): {json.dumps(summary)}")
    print(f"=> wrote {', '.join(files)}")
    return Evaluation(classes, positive, threshold, metrics, matrix, probabilities, targets)


def evaluate_model_dir(model_dir: str, data: str, split_name: str, device: torch.device, batch_size: int,
                       workers: int, checkpoint_path: Optional[str] = None) -> Evaluation:
    """Load MODEL_DIR's model_best (or ``checkpoint_path``) and evaluate it on DATA/split_name."""
    path = checkpoint_path or os.path.join(model_dir, BEST)
    checkpoint = load_checkpoint(path)
    classes = list(checkpoint.get("classes") or [])
    if not classes:
        raise ToolkitError(f"{path} does not record its class names")
    model = model_from_checkpoint(checkpoint).to(device)
    split = load_split(data, split_name, classes, preprocess_spec(checkpoint), workers)
    os.makedirs(model_dir, exist_ok=True)
    return evaluate_checkpoint(checkpoint, model, split, device, model_dir, batch_size)
