"""What changes between sites, re-estimated from a new site's own images.

- **The class prior**, from unlabelled images, by EM (Saerens et al., 2002): the share of pneumonia
  at the site that makes the model's posteriors, re-weighted to it, average to it. The posteriors
  must first be calibrated to the source's class shares (a temperature and a bias per class,
  Alexandari et al., 2020: train/calibration.py), or EM converges to the model's bias.
- **Batch-norm statistics** (AdaBN, Li et al., 2016): every batch-norm layer's mean and variance
  measured again on the site's images, so that a detector, an exposure or a processing chain that
  moves the features moves the normalisation with them. Measured naively they would also absorb
  the site's class mix (a site with more normals has other feature means for that reason alone), so
  the images are drawn in proportion to weights that give them the source's class shares.
- **An operating point that a few labelled images can guarantee**: the highest threshold whose
  one-sided 95% Clopper-Pearson lower bound on sensitivity still meets the target. Placing the
  threshold at an order statistic of the positives' scores makes that bound exact for the threshold
  so chosen (the sensitivity at the j-th lowest of n positive scores is a Beta(n - j + 1, j)
  variable), not only for a threshold fixed in advance.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from scipy import stats

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.train.metrics import logit_midpoint

GUARANTEE_CONFIDENCE = 0.95


class SiteDataError(ToolkitError):
    """Site images that cannot support the adaptation asked for."""


def em_prior(posteriors: np.ndarray, source_prior: np.ndarray, iterations: int = 1000,
             tolerance: float = 1e-8) -> Tuple[np.ndarray, np.ndarray]:
    """The site's class prior from ``N x C`` posteriors calibrated to ``source_prior``, and the posteriors
    re-weighted to it (Saerens et al., 2002)."""
    source_prior = np.asarray(source_prior, np.float64)
    prior = source_prior.copy()
    for _ in range(iterations):
        adjusted = posteriors * (prior / source_prior)
        adjusted /= adjusted.sum(1, keepdims=True)
        updated = adjusted.mean(0)
        converged = float(np.abs(updated - prior).max()) < tolerance
        prior = updated
        if converged:
            break
    adjusted = posteriors * (prior / source_prior)
    return prior, adjusted / adjusted.sum(1, keepdims=True)


def class_balance_weights(responsibilities: np.ndarray, site_prior: np.ndarray,
                          source_prior: np.ndarray) -> np.ndarray:
    """Per-image weights that give the site's images the source's class shares: each image's expected
    importance ratio source_prior / site_prior under its class responsibilities."""
    return (responsibilities * (np.asarray(source_prior) / np.asarray(site_prior))).sum(1)


def systematic_resample(weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """As many indices as weights, each image drawn in proportion to its weight by systematic resampling (one
    random offset, evenly spaced draws): every image appears the floor or the ceiling of its expected count,
    far less noise than independent draws, and equal weights return every image once."""
    cumulative = np.cumsum(np.asarray(weights, np.float64))
    cumulative /= cumulative[-1]
    positions = (np.random.default_rng(seed).random() + np.arange(len(weights))) / len(weights)
    return np.minimum(np.searchsorted(cumulative, positions, side="right"), len(weights) - 1)


def batch_norm_layers(model: nn.Module) -> list:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def reestimate_batch_norm(model: nn.Module, images: np.ndarray, spec: PreprocessSpec, device: torch.device,
                          batch_size: int, weights: Optional[np.ndarray] = None, seed: int = 0) -> int:
    """Replace every batch-norm layer's running statistics by the cumulative ones of ``images`` (uint8
    ``N x R x R``, as the model sees them), drawn in proportion to ``weights`` when given (systematic
    resampling); the layers' learned weights are untouched. Returns the number of layers."""
    layers = batch_norm_layers(model)
    if not layers:
        raise SiteDataError(f"{type(model).__name__} has no batch-norm layers to re-estimate")
    order = np.arange(len(images)) if weights is None else systematic_resample(weights, seed)
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average: every image counts the same
        layer.train()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = normalize(images[order[start:start + batch_size]], spec)
                model(torch.from_numpy(batch).to(device))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.eval()
    return len(layers)


def sensitivity_lower_bound(caught: int, positives: int, confidence: float = GUARANTEE_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound on the sensitivity when ``caught`` of ``positives`` are called."""
    if positives <= 0 or caught <= 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, caught, positives - caught + 1))


def positives_needed(target: float, confidence: float = GUARANTEE_CONFIDENCE) -> int:
    """The fewest positive images with which, all of them caught, the bound reaches ``target``."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(target)))


def guaranteed_threshold(positive_scores: np.ndarray, target: float,
                         confidence: float = GUARANTEE_CONFIDENCE) -> Tuple[float, float, int]:
    """The highest threshold at which sensitivity is at least ``target`` with ``confidence``, from the
    positive-class probabilities of labelled positives: (threshold, the lower bound there, positives caught).
    The threshold lies just below one positive's score (the middle of the gap on the logit scale)."""
    scores = np.sort(np.asarray(positive_scores, np.float64))
    count = len(scores)
    if count == 0 or sensitivity_lower_bound(count, count, confidence) < target:
        raise SiteDataError(f"{count} labelled positive image(s) cannot show a sensitivity of {target:g} with "
                            f"{confidence:.0%} confidence even if every one is caught; at least "
                            f"{positives_needed(target, confidence)} are needed")
    caught = next(k for k in range(1, count + 1) if sensitivity_lower_bound(k, count, confidence) >= target)
    lowest_kept = scores[count - caught]
    below = scores[count - caught - 1] if caught < count else 0.0
    # Never above the lowest positive kept, whatever the rounding of the midpoint.
    threshold = min(logit_midpoint(float(lowest_kept), float(below)), float(lowest_kept))
    return threshold, sensitivity_lower_bound(caught, count, confidence), caught
