"""95% confidence intervals for the screening figures, wherever a figure is reported.

- Accuracy, sensitivity and specificity are proportions of images: their interval is the exact
  (Clopper-Pearson) binomial interval from scipy, which never covers less than 95% whatever the
  sample size; at 132 normal images a specificity of 0.96 is anything from 0.91 to 0.99.
- The AUC has no exact interval: it comes from a bootstrap (scipy.stats.bootstrap, percentile) that
  resamples **patients**, not images, where the file names say which images share a patient
  (data/patients.py): a patient's images are alike, and resampling them one by one would pretend
  there is more evidence than there is.

- A difference between two models scored on the same images (a candidate recipe against the default)
  gets its own interval from one patient bootstrap shared by both (``paired_*_difference``): what the
  two have in common cancels, so a real gain can show where two separate intervals overlap.

Intervals are stored beside each figure as ``<key>_low`` and ``<key>_high`` (metrics.json, history,
the model card) for the registry's metrics that carry one (core/metric_registry.py).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from cxr_jetson.core.metric_registry import interval_keys
from cxr_jetson.data.patients import patient_id

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
# Below this many images of either class an AUC interval from resampling says nothing: left out (NaN).
MIN_CLASS_IMAGES_FOR_AUC = 5
_NAN_PAIR = (float("nan"), float("nan"))


def proportion_interval(successes: int, trials: int) -> Tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of ``successes / trials``; NaN without trials."""
    if trials <= 0:
        return _NAN_PAIR
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(CONFIDENCE, method="exact")
    return float(interval.low), float(interval.high)


def patient_groups(paths: Sequence[str]) -> np.ndarray:
    """One group index per image: images of one patient share it; a file name without a known patient
    convention is a patient of its own."""
    names = [patient_id(path) or f"image:{index}" for index, path in enumerate(paths)]
    return np.unique(names, return_inverse=True)[1]


def _weighted_aucs(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The Mann-Whitney AUC (ties count one half) under each row of image ``weights`` (``B x N``): a bootstrap
    resample is the original images, each counted as often as its patient was drawn."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores, positive = scores[order], targets[order].astype(bool)
    weights = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # runs of equal scores
    block = np.cumsum(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]) - 1
    negative_per_block = np.add.reduceat(np.where(positive, 0.0, weights), starts, axis=1)
    negative_below = np.cumsum(negative_per_block, axis=1) - negative_per_block
    beaten = negative_below[:, block] + 0.5 * negative_per_block[:, block]  # negatives each image outranks
    positive_weight = weights[:, positive].sum(1)
    negative_weight = weights[:, ~positive].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights[:, positive] * beaten[:, positive]).sum(1) / (positive_weight * negative_weight)


def _patient_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], groups: np.ndarray, resamples: int,
                       seed: int) -> Tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic`` (image weights ``B x N`` -> ``B`` values), resampling the
    ``groups`` (one index per image) with replacement; resamples whose statistic is undefined (NaN) are skipped."""
    groups = np.unique(np.asarray(groups), return_inverse=True)[1]
    units = int(groups.max()) + 1

    def resampled(chosen: np.ndarray, axis: int = -1) -> np.ndarray:
        chosen = np.moveaxis(np.atleast_2d(chosen), axis, -1)
        draws = np.zeros((chosen.shape[0], units))
        np.add.at(draws, (np.arange(chosen.shape[0])[:, None], chosen), 1.0)
        return statistic(draws[:, groups])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample with one class has no AUC (NaN): nanpercentile below skips it
        result = stats.bootstrap((np.arange(units),), resampled, vectorized=True, n_resamples=resamples,
                                 batch=200, confidence_level=CONFIDENCE, method="percentile",
                                 random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = (float(v) for v in np.nanpercentile(result.bootstrap_distribution, [2.5, 97.5]))
    return low, high


def _groups_or_images(groups: Optional[np.ndarray], count: int) -> np.ndarray:
    return np.arange(count) if groups is None else np.asarray(groups)


def _too_few_for_auc(targets: np.ndarray) -> bool:
    return min(int(targets.sum()), int((1 - targets).sum())) < MIN_CLASS_IMAGES_FOR_AUC


def auc_interval(scores: np.ndarray, targets: np.ndarray, groups: Optional[np.ndarray] = None,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap 95% interval of the AUC of ``scores`` for 0/1 ``targets``, resampling ``groups``
    (patients; default: images) with replacement; NaN for too few images of a class."""
    scores, targets = np.asarray(scores, float), np.asarray(targets).astype(int)
    if _too_few_for_auc(targets):
        return _NAN_PAIR
    return _patient_bootstrap(lambda weights: _weighted_aucs(scores, targets, weights),
                              _groups_or_images(groups, len(targets)), resamples, seed)


def paired_auc_difference(baseline: np.ndarray, candidate: np.ndarray, targets: np.ndarray,
                          groups: Optional[np.ndarray] = None, resamples: int = BOOTSTRAP_RESAMPLES,
                          seed: int = 0) -> Tuple[float, float, float]:
    """The candidate's AUC minus the baseline's on the same images, and its 95% interval from one patient
    bootstrap shared by both (so what the two models have in common cancels, unlike two separate intervals).
    ``baseline`` and ``candidate`` are scores of shape ``N`` or ``P x N`` (P pairs, e.g. seeds, on the same
    images): the difference is then the mean over the pairs, resampled jointly; seed-to-seed variation is not
    in the interval, only which patients were drawn. Too few images of a class: the interval is NaN."""
    baseline, candidate = np.atleast_2d(np.asarray(baseline, float)), np.atleast_2d(np.asarray(candidate, float))
    targets = np.asarray(targets).astype(int)

    def mean_difference(weights: np.ndarray) -> np.ndarray:
        return np.mean([_weighted_aucs(new, targets, weights) - _weighted_aucs(old, targets, weights)
                        for old, new in zip(baseline, candidate)], axis=0)

    with np.errstate(invalid="ignore"):
        observed = float(mean_difference(np.ones((1, len(targets))))[0])  # NaN with one class only
    if _too_few_for_auc(targets):
        return (observed, *_NAN_PAIR)
    return (observed, *_patient_bootstrap(mean_difference, _groups_or_images(groups, len(targets)), resamples, seed))


def paired_rate_difference(baseline_right: np.ndarray, candidate_right: np.ndarray,
                           groups: Optional[np.ndarray] = None, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = 0) -> Tuple[float, float, float]:
    """The candidate's rate of right calls minus the baseline's on the same images (for sensitivity, pass the
    pneumonia images only; for specificity, the normals), with its 95% paired patient-bootstrap interval;
    shapes and pairs as in paired_auc_difference. NaN without images."""
    baseline_right = np.atleast_2d(np.asarray(baseline_right, float))
    candidate_right = np.atleast_2d(np.asarray(candidate_right, float))
    if baseline_right.shape[1] == 0:
        return float("nan"), *_NAN_PAIR
    gained = (candidate_right - baseline_right).mean(0)  # per image, the mean over the pairs
    observed = float(gained.mean())
    return (observed, *_patient_bootstrap(lambda weights: weights @ gained / weights.sum(1),
                                          _groups_or_images(groups, len(gained)), resamples, seed))


def screening_intervals(metrics: Dict[str, float], scores: np.ndarray, targets: np.ndarray,
                        groups: Optional[np.ndarray] = None) -> Dict[str, float]:
    """``<key>_low`` / ``<key>_high`` for accuracy, sensitivity, specificity (from ``metrics``' confusion
    counts) and the AUC (bootstrap over ``groups``)."""
    tp, fp, tn, fn = (int(metrics[key]) for key in ("tp", "fp", "tn", "fn"))
    bounds = {"accuracy": proportion_interval(tp + tn, tp + fp + tn + fn),
              "sensitivity": proportion_interval(tp, tp + fn), "specificity": proportion_interval(tn, tn + fp),
              "auc": auc_interval(scores, targets, groups)}
    out: Dict[str, float] = {}
    for key, (low, high) in bounds.items():
        low_key, high_key = interval_keys(key)
        out[low_key], out[high_key] = low, high
    return out
