"""Evaluate a checkpoint on a split at its own threshold: metrics, pictures, and the data for reports."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from cxr_jetson.core.decision import DecisionRule
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.metric_registry import headline_summary
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.dataset import CachedSplit, load_split
from cxr_jetson.train.intervals import patient_groups
from cxr_jetson.train.loop import predict_probabilities
from cxr_jetson.train.metrics import confusion, evaluate_probabilities
from cxr_jetson.train.report import write_evaluation


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
    rule = DecisionRule.for_model(classes, checkpoint.get("positive_class"), checkpoint.get("threshold"))
    positive, threshold = rule.positive, rule.threshold
    probabilities = predict_probabilities(model, split, preprocess_spec(checkpoint), device, batch_size, False,
                                          f"evaluate {split.name}")
    targets = split.labels.numpy()
    metrics = evaluate_probabilities(probabilities, targets, positive, threshold, intervals=True,
                                     groups=patient_groups(split.paths))
    matrix = confusion(probabilities, targets, positive, threshold)
    out_dir = os.path.join(model_dir, f"eval_{split.name.replace(os.sep, '_')}")
    files = write_evaluation(out_dir, split.name, classes, probabilities, targets, metrics, matrix, positive,
                             checkpoint.get("history", []),
                             {"checkpoint_epoch": checkpoint.get("epoch"), "threshold_policy": checkpoint.get(
                                 "threshold_policy"), "images": split.paths})
    print(f"=> {split.name} ({len(split)} images, threshold {threshold}): {headline_summary(metrics)}")
    print(f"=> wrote {', '.join(files)}")
    return Evaluation(classes, positive, threshold, metrics, matrix, probabilities, targets)


def evaluate_model_dir(model_dir: str, data: str, split_name: str, device: torch.device, batch_size: int,
                       workers: int, checkpoint_path: Optional[str] = None) -> Evaluation:
    """Load MODEL_DIR's model_best (or ``checkpoint_path``) and evaluate it on DATA/split_name."""
    path = checkpoint_path or os.path.join(model_dir, BEST_CHECKPOINT)
    checkpoint = load_checkpoint(path)
    classes = list(checkpoint.get("classes") or [])
    if not classes:
        raise ToolkitError(f"{path} does not record its class names")
    model = model_from_checkpoint(checkpoint).to(device)
    split = load_split(data, split_name, classes, preprocess_spec(checkpoint), workers)
    os.makedirs(model_dir, exist_ok=True)
    return evaluate_checkpoint(checkpoint, model, split, device, model_dir, batch_size)
