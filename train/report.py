"""Pictures and files people read after training: curves, ROC, confusion matrix, metrics.json."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # headless: Jetsons over SSH and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from cxr_jetson.core.files import atomic_path  # noqa: E402
from cxr_jetson.core.metric_registry import HEADLINE, format_with_interval, interval_keys  # noqa: E402


def _json_ready(value: Any) -> Any:
    """NaN is not JSON; write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_json(path: str, data: Dict[str, Any]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        json.dump(_json_ready(data), handle, indent=2, sort_keys=True)


def write_history_csv(history: List[Dict[str, Any]], path: str) -> None:
    """One row per epoch, for spreadsheets and people without TensorBoard."""
    columns = sorted({key for entry in history for key in entry}, key=lambda k: (k != "epoch", k))
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def plot_training_curves(history: List[Dict[str, float]], path: str) -> None:
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [e["train_loss"] for e in history], "o-", label="train")
    loss_axis.plot(epochs, [e["val_loss"] for e in history], "o-", label="validation")
    loss_axis.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    loss_axis.legend()
    for metric in HEADLINE:
        values = [e.get(f"val_{metric.key}") for e in history]
        if any(v is not None and math.isfinite(v) for v in values):
            line, = metric_axis.plot(epochs, values, "o-", label=metric.label)
            low_key, high_key = interval_keys(f"val_{metric.key}")
            lows = [e.get(low_key, math.nan) for e in history]
            highs = [e.get(high_key, math.nan) for e in history]
            metric_axis.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.12, linewidth=0)
    best = [e["epoch"] for e in history if e.get("is_best")]
    if best:
        metric_axis.axvline(best[-1], color="grey", linestyle=":", label=f"best (epoch {best[-1]})")
    metric_axis.set(title="Validation (at the chosen threshold; bands: 95% CI)", xlabel="epoch", ylim=(0, 1.02))
    metric_axis.legend(loc="lower right")
    for axis in (loss_axis, metric_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_roc(scores: np.ndarray, targets: np.ndarray, metrics: Dict[str, float], title: str, path: str) -> None:
    fpr, tpr, _ = roc_curve(targets, scores)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(fpr, tpr, label=f"AUC {format_with_interval(metrics, 'auc')}")
    axis.plot([0, 1], [0, 1], color="lightgrey", linestyle="--")
    axis.plot(1 - metrics["specificity"], metrics["sensitivity"], "o", color="red",
              label=f"threshold {metrics['threshold']:.3f}: sens {metrics['sensitivity']:.3f}, "
                    f"spec {metrics['specificity']:.3f}")
    axis.set(title=title, xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
             xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_confusion(matrix: List[List[int]], classes: List[str], title: str, path: str) -> None:
    counts = np.asarray(matrix)
    rows = counts.sum(axis=1, keepdims=True).clip(min=1)
    figure, axis = plt.subplots(figsize=(4.6, 4))
    axis.imshow(counts / rows, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(counts):
        share = value / rows[row, 0]
        axis.text(column, row, f"{value}\n{share:.1%}", ha="center", va="center",
                  color="white" if share > 0.6 else "black")
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
             xlabel="predicted", ylabel="true", title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_evaluation(out_dir: str, split: str, classes: List[str], probabilities: np.ndarray,
                     targets: np.ndarray, metrics: Dict[str, float], matrix: List[List[int]],
                     positive: Optional[int], history: List[Dict[str, float]], extra: Dict[str, Any]) -> List[str]:
    """metrics.json plus ROC, confusion matrix and training curves in ``out_dir``; returns the files."""
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, "metrics.json")]
    write_json(written[0], {"split": split, "classes": classes, "metrics": metrics,
                            "confusion_matrix": matrix, **extra})
    title = f"{split} ({len(targets)} images)"
    if positive is not None and "sensitivity" in metrics and len(np.unique(targets)) == 2:
        written.append(os.path.join(out_dir, "roc.png"))
        plot_roc(probabilities[:, positive], (targets == positive).astype(int), metrics, f"ROC, {title}", written[-1])
    written.append(os.path.join(out_dir, "confusion_matrix.png"))
    plot_confusion(matrix, classes, f"Confusion, {title}", written[-1])
    if history:
        written.append(os.path.join(out_dir, "training_curves.png"))
        plot_training_curves(history, written[-1])
    return written
