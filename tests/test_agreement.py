"""core/agreement.py: the numpy AUC and Wilson intervals against scipy and scikit-learn, the intervals'
coverage, and the answers compared between a reference and a candidate."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from cxr_jetson.core.agreement import Answers, answers, auc, changed, coverage, screening, wilson
from cxr_jetson.core.decision import DecisionRule
from cxr_jetson.core.input_gate import GATE_COLUMNS, GatePolicy


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * targets, 1)  # rounded: many ties
    assert auc(scores, targets) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert np.isnan(auc(scores, np.ones(300)))


@pytest.mark.parametrize("successes,trials", [(0, 10), (3, 10), (50, 100), (99, 100), (538, 538)])
def test_wilson_matches_scipy(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    assert wilson(successes, trials) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_wilson_interval_always_holds_the_observed_share():
    for trials in range(1, 200):
        for successes in (0, trials // 3, trials):
            low, high = wilson(successes, trials)
            assert 0.0 <= low <= successes / trials <= high <= 1.0, (successes, trials)


def test_wilson_covers_the_true_share_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    for share, trials in ((0.93, 200), (0.5, 40)):
        hits = rng.binomial(trials, share, 4000)
        covered = np.mean([low <= share <= high for low, high in (wilson(int(k), trials) for k in hits)])
        assert 0.93 <= covered <= 0.97


def _policy() -> GatePolicy:
    return GatePolicy(mahalanobis=1.0, layout_margin=0.1, refer_band=(0.4, 0.6))


def _scores(refused: bool) -> np.ndarray:
    row = np.zeros(len(GATE_COLUMNS), np.float32)
    row[GATE_COLUMNS.index("grey_std")] = 50.0
    row[GATE_COLUMNS.index("layout_upright")] = 0.9
    row[GATE_COLUMNS.index("mahalanobis")] = 5.0 if refused else 0.5
    return row


def test_answers_follow_the_rule_and_the_gate():
    rule = DecisionRule(("NORMAL", "PNEUMONIA"), 1, 0.5)
    probabilities = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7]])
    gate = np.stack([_scores(False), _scores(False), _scores(False), _scores(True)])
    result = answers(probabilities, gate, rule, _policy())
    assert result.classes.tolist() == [0, 1, 1, 1]
    assert result.statuses.tolist() == ["ok", "refer", "ok", "not_assessed"]
    assert coverage(result) == {"ok": 2, "refer": 1, "not_assessed": 1}
    assert answers(probabilities, None, rule, None).statuses is None


def test_changed_counts_flips_refusals_and_referrals_apart():
    reference = Answers(np.array([0, 1, 1, 0]), None, np.array(["ok", "refer", "ok", "not_assessed"]))
    candidate = Answers(np.array([1, 1, 1, 0]), None, np.array(["ok", "ok", "not_assessed", "not_assessed"]))
    assert changed(reference, candidate) == {"flipped": 1, "refusals_changed": 1, "referrals_changed": 1}


def test_screening_reports_intervals_per_class():
    result = Answers(np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.8, 0.2, 0.4, 0.7]), None)
    metrics = screening(result, np.array([1, 1, 0, 1, 0]), positive=1)
    assert metrics["n"] == 5 and metrics["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert metrics["specificity"]["value"] == 0.5 and metrics["accuracy"]["value"] == 0.6
    assert metrics["accuracy"]["low"] < 0.6 < metrics["accuracy"]["high"]
    assert metrics["auc"] == pytest.approx(roc_auc_score([1, 1, 0, 1, 0], [0.9, 0.8, 0.2, 0.4, 0.7]))
