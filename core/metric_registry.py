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
    interval: bool = False  # reported with its 95% confidence interval (train/intervals.py)


METRICS: Tuple[Metric, ...] = (
    Metric("auc", "AUC", True, interval=True),
    Metric("accuracy", "accuracy", True, interval=True),
    Metric("sensitivity", "sensitivity", True, interval=True),
    Metric("specificity", "specificity", True, interval=True),
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


def interval_keys(key: str) -> Tuple[str, str]:
    """Where a metric's 95% interval is kept, beside the metric itself."""
    return f"{key}_low", f"{key}_high"


def format_with_interval(metrics: Mapping[str, Any], key: str) -> str:
    """``0.9871 [0.9790, 0.9934]`` where the interval is recorded (and finite), the value alone otherwise."""
    low_key, high_key = interval_keys(key)
    low, high = metrics.get(low_key), metrics.get(high_key)
    value = format_value(metrics.get(key))
    if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
        return f"{value} [{low:.4f}, {high:.4f}]"
    return value


def headline_summary(metrics: Mapping[str, Any], prefix: str = "") -> str:
    """``AUC 0.9871 [0.9790, 0.9934]  accuracy 0.9420 [...]  ...`` for the headline metrics present under
    ``prefix``, each with its 95% interval where one is recorded."""
    scoped = {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}
    return "  ".join(f"{metric.label} {format_with_interval(scoped, metric.key)}"
                     for metric in HEADLINE if metric.key in scoped)
