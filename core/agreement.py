"""A model's answers on labelled images, their screening metrics, and how far they moved from a reference's.

One definition for the two places that compare a model with its FP32 original: the INT8 guard at export
(export/int8_guard.py) and the device benchmark (edge/benchmark.py). Torch-free and scikit-learn-free,
because the benchmark runs on the Jetson: the AUC is the Mann-Whitney statistic computed with numpy, and
the intervals are Wilson score intervals (tests/test_agreement.py checks both against scipy and
scikit-learn).

An *answer* is what classify.py shows: the decided class at the model's shipped threshold, and, for a
model with an input gate, its status (decided, REFER, NOT ASSESSED).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from cxr_jetson.core.decision import DecisionRule, folded
from cxr_jetson.core.input_gate import STATUS_DECIDED, STATUS_NOT_ASSESSED, STATUS_REFER, GatePolicy, verdict

_Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class Answers:
    classes: np.ndarray             # int [N]: the decided class of each image
    positive_scores: Optional[np.ndarray]  # float [N]: the positive class's probability (None: no positive class)
    statuses: Optional[np.ndarray]  # str [N]: the input gate's status per image (None: no gate)


def answers(probabilities: np.ndarray, gate_scores: Optional[np.ndarray], rule: DecisionRule,
            policy: Optional[GatePolicy]) -> Answers:
    """``N x C`` probabilities (and ``N x G`` gate scores) -> the answers classify.py would show, by the
    runner's own rule (core/input_gate.verdict)."""
    positive = None if rule.positive is None else probabilities[:, rule.positive]
    statuses = None
    if policy is not None and gate_scores is not None:
        # The REFER band is on the decision scale, where 50% is the threshold in use (as DeployedModel.verdict).
        found = []
        for index, row in enumerate(probabilities):
            decision = None if positive is None else folded(float(positive[index]), rule.threshold)
            found.append(verdict(rule.decide(row), decision, gate_scores[index], policy).status)
        statuses = np.array(found)
    return Answers(rule.classes(probabilities), positive, statuses)


def auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``targets`` (ties count one half); NaN for one class."""
    targets = np.asarray(targets).astype(bool)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), float)
    sorted_scores = np.asarray(scores)[order]
    # Average ranks over ties: each run of equal scores gets the mean of its positions.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[targets].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def wilson(successes: int, trials: int) -> Tuple[float, float]:
    """The 95% Wilson score interval of a proportion; (NaN, NaN) without trials."""
    if trials <= 0:
        return float("nan"), float("nan")
    share = successes / trials
    denominator = 1 + _Z95 ** 2 / trials
    centre = (share + _Z95 ** 2 / (2 * trials)) / denominator
    half = _Z95 * math.sqrt(share * (1 - share) / trials + _Z95 ** 2 / (4 * trials ** 2)) / denominator
    # The interval always holds the share; rounding can leave an end a hair inside it at 0 or 1 (10 of 10
    # gave a high end of 0.9999999999999999), which makes an error bar negative.
    return max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half))


def screening(result: Answers, targets: np.ndarray, positive: Optional[int]) -> Dict[str, object]:
    """Accuracy, sensitivity and specificity (each with its 95% interval) and AUC of ``result`` against
    the true class indices ``targets``, over every image (the gate's status aside)."""
    targets = np.asarray(targets)
    correct = result.classes == targets
    metrics: Dict[str, object] = {"n": int(len(targets)), "accuracy": _share(correct)}
    if positive is not None and result.positive_scores is not None:
        is_positive = targets == positive
        metrics["sensitivity"] = _share(correct[is_positive])
        metrics["specificity"] = _share(correct[~is_positive])
        metrics["auc"] = auc(result.positive_scores, is_positive)
    return metrics


def metric_value(metric: object) -> float:
    """The number of a ``screening`` entry: a proportion's value, the AUC itself; NaN when missing."""
    if isinstance(metric, dict):
        return float(metric["value"])
    return float("nan") if metric is None else float(metric)


def _share(hits: np.ndarray) -> Dict[str, float]:
    low, high = wilson(int(hits.sum()), int(len(hits)))
    return {"value": float(hits.mean()) if len(hits) else float("nan"), "low": low, "high": high}


def changed(reference: Answers, candidate: Answers) -> Dict[str, int]:
    """How many decided classes differ (``flipped``) and, with a gate, how many images one refuses and the
    other does not (``refusals_changed``) or one refers and the other decides (``referrals_changed``)."""
    counts = {"flipped": int(np.sum(reference.classes != candidate.classes))}
    if reference.statuses is not None and candidate.statuses is not None:
        for key, status in (("refusals_changed", STATUS_NOT_ASSESSED), ("referrals_changed", STATUS_REFER)):
            counts[key] = int(np.sum((reference.statuses == status) != (candidate.statuses == status)))
    return counts


def coverage(result: Answers) -> Optional[Dict[str, int]]:
    """How many images the gate decided, referred and did not assess; None without a gate."""
    if result.statuses is None:
        return None
    return {status: int(np.sum(result.statuses == status))
            for status in (STATUS_DECIDED, STATUS_REFER, STATUS_NOT_ASSESSED)}
