"""Screening metrics and the decision-threshold policy.

For two classes the positive class is PNEUMONIA (or the second class). Reported: AUC (threshold-free),
and at the chosen threshold accuracy, sensitivity (recall of positives), specificity, balanced
accuracy, PPV/NPV, F1 and the confusion matrix. Argmax accuracy is reported too, as jetson-inference
does.

Threshold policies, applied to validation data only:
- ``sensitivity:0.96`` (default): the highest threshold that still catches at least 96% of positives,
  for screening where a miss costs more than a false alarm. Over four seeds it kept a cross-fitted
  sensitivity of at least 0.95 on validation, every shift proxy and an unseen series, where Youden's fell
  to 0.92: a target is set by the hundreds of positive images, Youden by the few normals at the edge
  (bench/threshold_policies.py);
- ``youden``: maximises sensitivity + specificity - 1 (equivalently balanced accuracy), so neither
  class dominates because of imbalance (3:1 pneumonia in this data set);
- ``fixed:0.5``: no tuning.
Any threshold inside the interval that gives the optimal operating point classifies validation
identically; the policy returns the middle of that interval on the logit scale rather than its
edge, which is a validation score itself and would sit on one image's probability.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from cxr_jetson.core.decision import DEFAULT_THRESHOLD, decided_classes, is_positive
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.train.intervals import screening_intervals

DEFAULT_POLICY = "sensitivity:0.96"


class PolicyError(ToolkitError):
    """A threshold policy string that cannot be parsed."""


def parse_policy(policy: str) -> tuple:
    name, _, value = policy.partition(":")
    if name == "youden" and not value:
        return ("youden", None)
    if name in ("sensitivity", "fixed") and value:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if 0.0 < number <= 1.0 or (name == "fixed" and number == 0.0):
            return (name, number)
    raise PolicyError(f"invalid threshold policy {policy!r}; use youden, sensitivity:0.95 or fixed:0.5")


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def logit_midpoint(upper: float, lower: float) -> float:
    """Middle of (lower, upper] on the logit scale, as a probability."""
    if not math.isfinite(upper):
        upper = 1.0
    middle = (_logit(upper) + _logit(max(lower, 0.0))) / 2
    return 1.0 / (1.0 + math.exp(-middle))


def choose_threshold(scores: np.ndarray, targets: np.ndarray, policy: str) -> float:
    """Decision threshold on the positive-class probability, chosen on (validation) ``scores``."""
    name, value = parse_policy(policy)
    if name == "fixed":
        return float(value)
    if len(np.unique(targets)) < 2:
        warnings.warn(f"validation has a single class; threshold left at {DEFAULT_THRESHOLD}", stacklevel=2)
        return DEFAULT_THRESHOLD
    fpr, tpr, thresholds = roc_curve(targets, scores, drop_intermediate=False)
    if name == "youden":
        index = int(np.argmax(tpr - fpr))
    else:
        index = int(np.argmax(tpr >= value))
    # thresholds[index] is the lowest score still called positive; any value down to the next score
    # gives the same calls.
    lower = thresholds[index + 1] if index + 1 < len(thresholds) else 0.0
    return float(logit_midpoint(float(thresholds[index]), float(lower)))


def binary_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float) -> Dict[str, float]:
    """Metrics of positive-class probabilities ``scores`` against 0/1 ``targets`` at ``threshold``."""
    predicted = is_positive(scores, threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(targets, predicted, labels=[0, 1]).ravel())

    def ratio(num: int, den: int) -> float:
        return float(num / den) if den else float("nan")

    sensitivity, specificity = ratio(tp, tp + fn), ratio(tn, tn + fp)
    ppv = ratio(tp, tp + fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        auc = float(roc_auc_score(targets, scores)) if len(np.unique(targets)) == 2 else float("nan")
    return {
        "auc": auc, "threshold": float(threshold), "accuracy": ratio(tp + tn, len(targets)),
        "sensitivity": sensitivity, "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2, "ppv": ppv, "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(len(targets)),
    }


def evaluate_probabilities(probabilities: np.ndarray, targets: np.ndarray, positive: Optional[int],
                           threshold: Optional[float], intervals: bool = False,
                           groups: Optional[np.ndarray] = None) -> Dict[str, float]:
    """All metrics for ``N x C`` probabilities; binary ones when a positive class and threshold exist, with
    ``intervals`` their 95% confidence intervals (the AUC's resampling the patients in ``groups``)."""
    metrics = {"accuracy_argmax": float(np.mean(probabilities.argmax(1) == targets))}
    if positive is not None and threshold is not None:
        scores, binary_targets = probabilities[:, positive], (targets == positive).astype(int)
        metrics.update(binary_metrics(scores, binary_targets, threshold))
        if intervals:
            metrics.update(screening_intervals(metrics, scores, binary_targets, groups))
    else:
        metrics["accuracy"] = metrics["accuracy_argmax"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            try:
                metrics["auc"] = float(roc_auc_score(targets, probabilities, multi_class="ovr"))
            except ValueError:
                metrics["auc"] = float("nan")
    return metrics


def confusion(probabilities: np.ndarray, targets: np.ndarray, positive: Optional[int],
              threshold: Optional[float]) -> List[List[int]]:
    """Confusion matrix (rows: true class, columns: decided) under the decision rule (core/decision.py)."""
    predicted = decided_classes(probabilities, positive, threshold)
    return confusion_matrix(targets, predicted, labels=list(range(probabilities.shape[1]))).tolist()
