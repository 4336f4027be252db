"""benchmark.py's results for people: the console table, the differences to the reference, and a picture.

The picture needs matplotlib, which a Jetson may not have: without it the table and the JSON still come,
and a line says why there is no picture (the one import of matplotlib on the device side, allowed in
pyproject.toml's layer contract for this module alone).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List

from cxr_jetson.core.agreement import metric_value
from cxr_jetson.core.files import atomic_path

_SHOWN = ("accuracy", "sensitivity", "specificity")


def deltas(rows: List[Dict[str, Any]]) -> None:
    """Add to each measured row its metrics minus the reference row's (the first measured one)."""
    measured = [row for row in rows if "error" not in row]
    if not measured:
        return
    reference = measured[0]["metrics"]
    for row in measured:
        row["delta"] = {key: metric_value(row["metrics"].get(key)) - metric_value(reference.get(key))
                        for key in ("auc",) + _SHOWN if key in reference}


def _cell(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "n/a" if metric is None or not math.isfinite(float(metric)) else f"{float(metric):.4f}"
    return f"{metric['value']:.3f} ({metric['low']:.3f}-{metric['high']:.3f})"


def _coverage(row: Dict[str, Any]) -> str:
    counts = row.get("coverage")
    if not counts:
        return "no gate"
    return f"{counts['ok']}/{counts['refer']}/{counts['not_assessed']}"


def print_table(rows: List[Dict[str, Any]]) -> None:
    header = (f"{'back-end':<12}{'prec.':<6}{'device':<8}{'accuracy (95% CI)':<22}{'sensitivity':<22}"
              f"{'specificity':<22}{'AUC':<8}{'dAUC':>8}{'flipped':>8}{'gate ok/REFER/NA':>18}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'img/s (batch)':>15}{'MB':>7}")
    print(header)
    for row in rows:
        if "error" in row:
            print(f"{row['backend']:<12}{row['requested']:<6}not measured: {row['error']}")
            continue
        metrics, latency, best = row["metrics"], row["latency_ms"], row["throughput"]
        cells = "".join(f"{_cell(metrics.get(key)):<22}" for key in _SHOWN)
        delta = row.get("delta", {}).get("auc", float("nan"))
        flipped = row.get("flipped", "-")
        print(f"{row['backend']:<12}{row['precision']:<6}{row['device']:<8}{cells}{_cell(metrics.get('auc')):<8}"
              f"{delta:>+8.4f}{flipped:>8}{_coverage(row):>18}{latency['p50']:>9.2f}{latency['p99']:>9.2f}"
              f"{best['images_per_second']:>9.1f} ({best['batch']:>2}){row['size_mb']:>7.1f}")


def save_plot(rows: List[Dict[str, Any]], path: str) -> bool:
    """Accuracy, sensitivity and specificity with their intervals, and latency, per candidate; False when
    matplotlib is missing (a line says so) or nothing was measured."""
    measured = [row for row in rows if "error" not in row]
    if not measured:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("=> no picture: matplotlib is not installed (pip install matplotlib)")
        return False
    names = [f"{row['backend']}\n{row['precision']}" + (f" {row['int8_form']}" if row.get("int8_form") else "")
             + f" ({row['device']})" for row in measured]
    figure, (left, right) = plt.subplots(1, 2, figsize=(6 + 1.6 * len(measured), 4.5))
    width = 0.8 / len(_SHOWN)
    for offset, key in enumerate(_SHOWN):
        values = [row["metrics"][key] for row in measured]
        centres = [i + (offset - 1) * width for i in range(len(measured))]
        errors = [[v["value"] - v["low"] for v in values], [v["high"] - v["value"] for v in values]]
        left.bar(centres, [v["value"] for v in values], width, yerr=errors, capsize=3, label=key)
    low = min(row["metrics"][key]["low"] for row in measured for key in _SHOWN)
    left.set(ylim=(max(0.0, low - 0.05), 1.04), xticks=range(len(measured)), xticklabels=names,
             title="at the shipped threshold (95% CI)")
    left.legend(loc="upper center", ncol=len(_SHOWN), fontsize=8)
    p50 = [row["latency_ms"]["p50"] for row in measured]
    p99 = [row["latency_ms"]["p99"] for row in measured]
    right.bar(range(len(measured)), p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99)]], capsize=3,
              color="tab:gray")
    right.set(xticks=range(len(measured)), xticklabels=names, ylabel="ms", title="batch-1 latency (p50, bar to p99)")
    for index, row in enumerate(measured):
        best = row["throughput"]
        right.annotate(f"{best['images_per_second']:.0f} img/s\n(batch {best['batch']})", (index, p50[index]),
                       ha="center", va="bottom", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format=os.path.splitext(path)[1].lstrip(".") or "png")
    plt.close(figure)
    return True
