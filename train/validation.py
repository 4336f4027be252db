"""Each epoch's validation: loss, the decision threshold, the metrics, and the score that picks model_best.

With --robust-threshold the splits are validation and its shifted copy (train/shift.py): the
threshold and the selection score come from both pooled, because in-distribution validation alone is
over-confident and a threshold tuned on it collapses on another site's images. The metrics reported
are validation's, with the shifted copy's under ``shifted_``, each with its 95% confidence interval
(train/intervals.py: exact binomial for the proportions, a patient-level bootstrap for the AUC).

Each epoch's validation runs under the training's autocast (bf16 on GPUs and on CPUs with native bf16,
where it is 3 to 4 times faster than fp32): it picks model_best and reports the epoch. What ships is
settled once, in fp32, the arithmetic of the exported model: model_best's threshold and metrics are
taken again from its fp32 probabilities at the end of training (train/main.py ``_settle_best``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from cxr_jetson.core.metric_registry import HEADLINE, SHIFTED_PREFIX, interval_keys
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.train.dataset import CachedSplit
from cxr_jetson.train.intervals import patient_groups
from cxr_jetson.train.loop import predict_probabilities
from cxr_jetson.train.metrics import choose_threshold, evaluate_probabilities


@dataclass
class Validation:
    loss: float
    threshold: Optional[float]
    metrics: Dict[str, float]     # validation's, and the shifted copy's under shifted_*
    selection: Dict[str, float]   # what --select-metric reads: the pooled splits' metrics
    probabilities: List[np.ndarray]  # per split, as computed (the calibration reuses the fp32 ones)


def validate(model: nn.Module, splits: List[CachedSplit], spec: PreprocessSpec, device: torch.device,
             batch_size: int, channels_last: bool, positive: Optional[int], policy: str,
             amp_dtype: Optional[torch.dtype] = None) -> Validation:
    """``amp_dtype``: the autocast of an epoch's validation; None (fp32) for what ships."""
    probabilities = [predict_probabilities(model, split, spec, device, batch_size, channels_last,
                                           f"validate {split.name}", amp_dtype) for split in splits]
    targets = [split.labels.numpy() for split in splits]
    clean_p, clean_t = probabilities[0], targets[0]
    loss = float(-np.mean(np.log(np.clip(clean_p[np.arange(len(clean_t)), clean_t], 1e-12, None))))
    pooled_p, pooled_t = np.concatenate(probabilities), np.concatenate(targets)
    threshold = (choose_threshold(pooled_p[:, positive], (pooled_t == positive).astype(int), policy)
                 if positive is not None else None)
    groups = patient_groups(splits[0].paths)
    metrics = evaluate_probabilities(clean_p, clean_t, positive, threshold, intervals=True, groups=groups)
    for shifted_p, shifted_t in zip(probabilities[1:], targets[1:]):
        shifted = evaluate_probabilities(shifted_p, shifted_t, positive, threshold, intervals=True, groups=groups)
        kept = [key for m in HEADLINE for key in (m.key, *interval_keys(m.key)) if key in shifted]
        metrics.update({SHIFTED_PREFIX + key: shifted[key] for key in kept})
    selection = evaluate_probabilities(pooled_p, pooled_t, positive, threshold) if len(splits) > 1 else metrics
    return Validation(loss, threshold, metrics, selection, probabilities)


def selection_score(validation: Validation, metric: str) -> Tuple[float, float]:
    """Higher is better; validation loss breaks ties (AUC often saturates at 1.0 in-distribution)."""
    if metric == "loss":
        return (-validation.loss, 0.0)
    value = validation.selection.get(metric, float("nan"))
    return (value if math.isfinite(value) else -math.inf, -validation.loss)
