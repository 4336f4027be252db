"""Temperature scaling folded into the last layer (train/calibration.py) and its use by train.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision

from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.train.calibration import (
    MAX_TEMPERATURE,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    rescale,
    rescale_threshold,
    usable_temperature,
)


def _overconfident(temperature: float, count: int = 4000, seed: int = 0):
    """Labels drawn from softmax(z), reported as softmax(z * temperature): an over-confident model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (count, 2))
    calibrated = torch.softmax(torch.from_numpy(logits), 1).numpy()
    targets = (rng.random(count) < calibrated[:, 1]).astype(int)
    reported = torch.softmax(torch.from_numpy(logits * temperature), 1).numpy()
    return reported, targets


def test_fitted_temperature_recovers_the_overconfidence_and_lowers_the_calibration_error():
    reported, targets = _overconfident(3.0)
    temperature = fit_temperature(reported, targets)
    assert temperature == pytest.approx(3.0, rel=0.15)
    assert expected_calibration_error(rescale(reported, temperature), targets) < \
        expected_calibration_error(reported, targets) / 2


def test_a_model_that_knows_nothing_fits_an_unbounded_temperature_and_gets_the_cap():
    rng = np.random.default_rng(1)
    scores = 0.5 + rng.normal(0.0, 0.02, 400)  # a near-constant, uninformative positive-class probability
    probabilities = np.stack([1 - scores, scores], 1)
    fitted = fit_temperature(probabilities, rng.integers(0, 2, 400))
    assert fitted > MAX_TEMPERATURE
    assert usable_temperature(fitted) == MAX_TEMPERATURE
    assert usable_temperature(0.3) == 1.0 and usable_temperature(2.5) == 2.5  # never sharpened


def test_folding_divides_the_logits_and_the_threshold_keeps_every_decision():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    images = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
        fold_temperature(model, 2.5)
        after = model(images)
    torch.testing.assert_close(after, before / 2.5, rtol=1e-4, atol=1e-5)
    old = torch.softmax(before, 1)[:, 1].numpy()
    new = torch.softmax(after, 1)[:, 1].numpy()
    for threshold in (0.05, 0.3, 0.5, 0.8):
        np.testing.assert_array_equal(old >= threshold, new >= rescale_threshold(threshold, 2.5))
    assert rescale_threshold(None, 2.0) is None


def test_training_calibrates_model_best_once(trained_model_dir):
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    record = best["calibration"]
    assert record["temperature"] == usable_temperature(record["fitted"]) and record["images"] > 0
    assert 0.0 <= record["ece_after"] <= 1.0
    assert "calibration" not in load_checkpoint(os.path.join(trained_model_dir, "checkpoint.pth.tar"))
    # the evaluation after calibration makes the decisions validation made before it
    after = json.load(open(os.path.join(trained_model_dir, "eval_val", "metrics.json")))["metrics"]
    for key in ("tp", "fp", "tn", "fn"):
        assert after[key] == best["val_metrics"][key], key
