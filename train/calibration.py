"""Temperature scaling (Guo et al., 2017), folded into the model's last linear layer.

A network trained to near-zero loss calls almost everything 99.9%; on another site's images that
confidence is wrong as often as the decision is. One temperature T, fitted by minimising the
negative log-likelihood on validation plus its shifted copy (the same images the threshold is chosen
on), divides the logits. Dividing the last linear layer's weights and bias by T does exactly that
inside the network, so the checkpoint, the ONNX, a TensorRT engine and jetson-inference's imagenet.py
all report the calibrated confidence with no extra step. Ranking (AUC) and decisions do not change:
the threshold moves with the logits.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from cxr_jetson.networks.architectures import final_linear, head_name

ECE_BINS = 15
# A model whose confidence carries almost no information on validation fits T -> infinity: every logit
# divided down to within float (and, in an FP16 engine, half-float) resolution of the others, and the
# ranking, the threshold and the decisions lost to rounding. Ten keeps a logit gap of 0.01 above FP16's
# resolution while already flattening a 99.99% call to about 72%.
MAX_TEMPERATURE = 10.0


def _log_probabilities(probabilities: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.log(np.clip(probabilities, 1e-12, None))).double()


def _fit(probabilities: np.ndarray, targets: np.ndarray, with_bias: bool) -> Tuple[float, np.ndarray]:
    """The T > 0 (and, ``with_bias``, the per-class biases b) that minimise the NLL of softmax(log p / T + b):
    log-probabilities are logits up to a per-row constant, which softmax ignores."""
    logits, labels = _log_probabilities(probabilities), torch.from_numpy(targets).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(probabilities.shape[1], dtype=torch.float64, requires_grad=with_bias)
    optimizer = torch.optim.LBFGS([log_t, bias] if with_bias else [log_t], lr=0.1, max_iter=200,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp() + bias, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp()), bias.detach().numpy()


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature alone (what is folded into the model: it keeps the ranking and, moving the threshold
    with it, every decision)."""
    return _fit(probabilities, targets, with_bias=False)[0]


def fit_bias_corrected_temperature(probabilities: np.ndarray, targets: np.ndarray) -> Tuple[float, np.ndarray]:
    """Temperature and per-class biases (Alexandari et al., 2020): posteriors calibrated to the class shares of
    ``targets``, which is what re-estimating a new site's class prior by EM needs (train/site_shift.py)."""
    return _fit(probabilities, targets, with_bias=True)


def usable_temperature(fitted: float) -> float:
    """The temperature folded into the model: never below 1, because validation is the over-confident
    side of any shift and, with no mistakes on it, the likelihood keeps rising as T shrinks towards 0;
    never above MAX_TEMPERATURE."""
    return min(max(1.0, fitted), MAX_TEMPERATURE)


def rescale(probabilities: np.ndarray, temperature: float, bias: Optional[np.ndarray] = None) -> np.ndarray:
    """What the model's probabilities become once its logits are divided by ``temperature`` (and ``bias``
    added)."""
    logits = _log_probabilities(probabilities) / temperature
    if bias is not None:
        logits = logits + torch.from_numpy(np.asarray(bias, np.float64))
    return torch.softmax(logits, dim=1).numpy()


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    correct = (predicted == targets).astype(float)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, ECE_BINS - 1)
    return float(sum(abs(confidence[bins == b].mean() - correct[bins == b].mean()) * np.mean(bins == b)
                     for b in range(ECE_BINS) if np.any(bins == b)))


def rescale_threshold(threshold: Optional[float], temperature: float) -> Optional[float]:
    """The threshold that keeps every two-class decision once the logits are divided by T."""
    if threshold is None or not 0.0 < threshold < 1.0:
        return threshold
    return 1.0 / (1.0 + math.exp(-math.log(threshold / (1.0 - threshold)) / temperature))


def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Divide the last linear layer's weights and bias by ``temperature``, in place."""
    layer = final_linear(model.get_submodule(head_name(model)))
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no final linear layer to fold a temperature into")
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)


def calibration_record(probabilities: np.ndarray, targets: np.ndarray, temperature: float) -> Dict[str, float]:
    return {"temperature": temperature, "ece_before": expected_calibration_error(probabilities, targets),
            "ece_after": expected_calibration_error(rescale(probabilities, temperature), targets),
            "images": int(len(targets))}


def calibrate_best(checkpoint: Dict[str, Any], model: nn.Module, probabilities: List[np.ndarray],
                   targets: List[np.ndarray]) -> None:
    """Fit a temperature on the threshold's own images (``probabilities``: model_best's fp32 ones, per split),
    fold it into ``model`` and move the threshold with it; ``checkpoint`` (model_best's payload) is updated."""
    probabilities, targets = np.concatenate(probabilities), np.concatenate(targets)
    fitted = fit_temperature(probabilities, targets)
    temperature = usable_temperature(fitted)
    if fitted > MAX_TEMPERATURE:
        print(f"=> warning: validation fits a temperature of {fitted:.3g}: the model's confidence says little about "
              f"its accuracy there; capped at {MAX_TEMPERATURE:g} so that rounding keeps its ranking and decisions")
    fold_temperature(model, temperature)
    threshold = checkpoint.get("threshold")
    checkpoint.update(state_dict=model.state_dict(), threshold=rescale_threshold(threshold, temperature),
                      calibration=dict(calibration_record(probabilities, targets, temperature), fitted=fitted))
    record = checkpoint["calibration"]
    print(f"=> calibrated model_best: temperature {temperature:.3f} (fitted {fitted:.3f}); expected calibration error "
          f"{record['ece_before']:.4f} -> {record['ece_after']:.4f} on {len(targets)} images"
          + (f"; threshold {threshold:.4f} -> {checkpoint['threshold']:.4f} (same decisions)" if threshold else ""))
