"""The screening metrics, named once: every place that shows, logs or tabulates metrics (console,
TensorBoard, history, training curves, model card, evaluation summary, comparison report,
benchmarks) iterates this registry, so a new metric appears everywhere by being added here.

The values themselves are computed in train/metrics.py, at the model's decision threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Tuple


@dataclass(frozen=True)
class Metric:
    key: str          # key in metric dicts, metrics.json and history (as val_<key>)
    label: str        # how people read it
    headline: bool    # in every summary line, curve and benchmark table; the rest in full reports


METRICS: Tuple[Metric, ...] = (
    Metric("auc", "AUC", True),
    Metric("accuracy", "accuracy", True),
    Metric("sensitivity", "sensitivity", True),
    Metric("specificity", "specificity", True),
    Metric("balanced_accuracy", "balanced accuracy", True),
    Metric("ppv", "precision (PPV)", False),
    Metric("npv", "NPV", False),
    Metric("f1", "F1", False),
)
HEADLINE: Tuple[Metric, ...] = tuple(metric for metric in METRICS if metric.headline)
# Metrics on the shifted copy of validation are kept under this prefix (train/shift.py).
SHIFTED_PREFIX = "shifted_"


def format_value(value: Any) -> str:
    """4 decimals for a number, n/a for NaN or a missing value, as is otherwise."""
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def headline_summary(metrics: Mapping[str, Any], prefix: str = "") -> str:
    """``AUC 0.9871  accuracy 0.9420  ...`` for the headline metrics present under ``prefix``."""
    return "  ".join(f"{metric.label} {format_value(metrics[prefix + metric.key])}"
                     for metric in HEADLINE if prefix + metric.key in metrics)
