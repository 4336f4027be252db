"""train/intervals.py: the exact binomial intervals and the patient-level AUC bootstrap cover the true
value at the nominal rate in simulation, and every report carries them."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cxr_jetson.core.metric_registry import format_with_interval, headline_summary
from cxr_jetson.train.intervals import (
    _weighted_aucs,
    auc_interval,
    paired_auc_difference,
    paired_rate_difference,
    patient_groups,
    proportion_interval,
)
from cxr_jetson.train.metrics import evaluate_probabilities


@pytest.mark.parametrize("share,trials", [(0.96, 132), (0.9, 406), (0.5, 30), (0.99, 60)])
def test_exact_interval_never_covers_less_than_nominal(share, trials):
    """Clopper-Pearson's coverage, computed exactly over every possible count, is at least 95%."""
    counts = np.arange(trials + 1)
    covered = np.array([low <= share <= high for low, high in (proportion_interval(int(k), trials) for k in counts)])
    coverage = float(stats.binom.pmf(counts, trials, share)[covered].sum())
    assert 0.95 <= coverage <= 0.995


def test_exact_interval_in_a_simulation():
    rng = np.random.default_rng(1)
    hits = rng.binomial(132, 0.93, 2000)
    covered = np.mean([low <= 0.93 <= high for low, high in (proportion_interval(int(k), 132) for k in hits)])
    assert 0.94 <= covered <= 0.99
    assert np.isnan(proportion_interval(0, 0)).all()


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auc_matches_scikit_learn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * targets, 1)  # rounded: many ties
    weights = rng.integers(0, 4, (4, 300)).astype(float)
    expected = [roc_auc_score(targets, scores, sample_weight=row) for row in weights]
    assert _weighted_aucs(scores, targets, weights) == pytest.approx(expected, abs=1e-12)


def _clustered_sample(rng: np.random.Generator, patients: int, separation: float):
    """Two images per patient whose scores share the patient's own effect (as a patient's X-rays do)."""
    labels = rng.random(patients) < 0.6
    patient_effect = rng.normal(0.0, 1.0, patients)
    groups = np.repeat(np.arange(patients), 2)
    scores = separation * labels[groups] + patient_effect[groups] + rng.normal(0.0, 0.5, 2 * patients)
    return scores, labels[groups].astype(int), groups


def test_patient_bootstrap_covers_the_true_auc_at_the_nominal_rate():
    """Binormal scores with patients: the true AUC is Phi(d / sqrt(2 (1 + 0.25))); the patient-level
    bootstrap covers it about 95% of the time, resampling images as if independent covers it less."""
    separation = 1.5
    true_auc = stats.norm.cdf(separation / np.sqrt(2 * 1.25))
    rng = np.random.default_rng(0)
    by_patient, by_image = [], []
    for _ in range(300):
        scores, targets, groups = _clustered_sample(rng, 80, separation)
        low, high = auc_interval(scores, targets, groups, resamples=500)
        by_patient.append(low <= true_auc <= high)
        low, high = auc_interval(scores, targets, None, resamples=500)
        by_image.append(low <= true_auc <= high)
    assert 0.90 <= np.mean(by_patient) <= 0.99
    assert np.mean(by_image) < np.mean(by_patient)


def test_paired_auc_difference_covers_the_true_difference_and_is_narrower_than_two_intervals():
    """Two models scoring the same patients (each with its own noise on top of what the images share): the
    paired bootstrap of their AUC difference covers the true difference about 95% of the time, and is
    narrower than combining the two models' separate intervals, because what they share cancels."""
    weak, strong, own_noise = 1.5, 1.9, 0.5
    spread = np.sqrt(2 * (1 + 0.25 + own_noise ** 2))
    true_difference = stats.norm.cdf(strong / spread) - stats.norm.cdf(weak / spread)
    rng = np.random.default_rng(3)
    covered, paired_widths, separate_widths = [], [], []
    for _ in range(200):
        shared, targets, groups = _clustered_sample(rng, 80, 0.0)
        baseline = shared + weak * targets + rng.normal(0, own_noise, shared.size)
        candidate = shared + strong * targets + rng.normal(0, own_noise, shared.size)
        observed, low, high = paired_auc_difference(baseline, candidate, targets, groups, resamples=400)
        assert observed == pytest.approx(roc_auc_score(targets, candidate) - roc_auc_score(targets, baseline))
        covered.append(low <= true_difference <= high)
        paired_widths.append(high - low)
        widths = [np.subtract(*auc_interval(s, targets, groups, resamples=400)[::-1]) for s in (baseline, candidate)]
        separate_widths.append(np.hypot(*widths))
    assert 0.90 <= np.mean(covered) <= 0.99
    assert np.mean(paired_widths) < 0.8 * np.mean(separate_widths)


def test_paired_rate_difference_covers_the_true_difference():
    """Each image's difficulty shared by both models and by the patient's other image: the baseline decides it
    right below the 85th percentile of difficulty, the candidate below the 90th, a true gain of 0.05."""
    rng = np.random.default_rng(4)
    covered = []
    for _ in range(300):
        patients = rng.normal(0, 1, 100)
        groups = np.repeat(np.arange(100), 2)
        difficulty = stats.norm.cdf((patients[groups] + rng.normal(0, 0.5, 200)) / np.sqrt(1.25))
        observed, low, high = paired_rate_difference(difficulty < 0.85, difficulty < 0.90, groups, resamples=400)
        covered.append(low <= 0.05 <= high)
    assert 0.90 <= np.mean(covered) <= 0.99


def test_paired_differences_of_several_pairs_are_their_mean_and_nothing_changed_is_zero():
    groups = np.repeat(np.arange(50), 2)
    right = np.ones(100, bool)
    fewer = right.copy()
    fewer[:20] = False  # ten patients' two images each
    observed, low, high = paired_rate_difference(fewer, right, groups)
    assert observed == pytest.approx(0.2) and 0 < low < 0.2 < high
    assert paired_rate_difference(np.stack([fewer, right]), np.stack([right, right]), groups)[0] == pytest.approx(0.1)
    assert paired_rate_difference(right, right, groups) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_rate_difference(right[:0], right[:0])).all()
    targets = np.r_[np.zeros(50, int), np.ones(50, int)]
    scores = np.linspace(0, 1, 100) + 0.3 * targets
    assert paired_auc_difference(scores, scores, targets, groups) == pytest.approx((0.0, 0.0, 0.0))
    two_positives = (np.arange(52) > 49).astype(int)
    observed, low, high = paired_auc_difference(scores[:52], scores[:52] ** 2, two_positives)
    assert observed == 0 and np.isnan([low, high]).all()  # too few to resample; a monotone change ranks alike
    assert np.isnan(paired_auc_difference(scores, scores, np.ones(100, int))).all()


def test_auc_interval_needs_both_classes():
    assert np.isnan(auc_interval(np.linspace(0, 1, 50), np.r_[np.ones(48), np.zeros(2)])).all()


def test_patient_groups_from_file_names():
    paths = ["a/person1_bacteria_1.jpeg", "b/person1_virus_2.jpeg", "IM-0115-0001.jpeg", "IM-0115-0001-0002.jpeg",
             "unknown.png", "other.png"]
    groups = patient_groups(paths)
    assert groups[0] == groups[1] and groups[2] == groups[3]
    assert len(set(groups.tolist())) == 4


def test_metrics_carry_their_intervals_and_summaries_show_them():
    rng = np.random.default_rng(3)
    targets = (rng.random(400) < 0.7).astype(int)
    positive = np.clip(0.5 + 0.3 * (targets - 0.5) + rng.normal(0, 0.2, 400), 0, 1)
    probabilities = np.stack([1 - positive, positive], 1)
    metrics = evaluate_probabilities(probabilities, targets, 1, 0.5, intervals=True)
    for key in ("auc", "accuracy", "sensitivity", "specificity"):
        assert metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"]
    low, high = proportion_interval(metrics["tp"], metrics["tp"] + metrics["fn"])
    assert (metrics["sensitivity_low"], metrics["sensitivity_high"]) == (low, high)
    assert format_with_interval(metrics, "auc") == f"{metrics['auc']:.4f} [{metrics['auc_low']:.4f}, " \
                                                   f"{metrics['auc_high']:.4f}]"
    assert "sensitivity 0." in headline_summary(metrics) and "[" in headline_summary(metrics)
    assert "_low" not in str(evaluate_probabilities(probabilities, targets, 1, 0.5).keys())
