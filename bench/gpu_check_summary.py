"""The GPU check's summary (bench/gpu_check.py): reading what the steps wrote (train_recipes.json,
gpu_latency.json, benchmark.json), the training ratios and the projection to the full recipe, and the
table printed at the end of a run."""
from __future__ import annotations

import json
import os
import statistics
from typing import Callable, Dict, Optional

FULL_EPOCHS = 35                    # the full recipe's epochs: the training figures are projected to it


def _load_json(path: str) -> Optional[Dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def training_summary(figures: Dict) -> Dict[str, object]:
    """Seconds, speed and accuracy of each recipe from train_recipes.json, and jetson/ours ratios."""
    epochs, recipes = figures["epochs"], {}
    for name, result in figures["results"].items():
        epoch = statistics.median(result["epoch_seconds"])
        recipes[name] = {"seconds": result["seconds"], "median_epoch_s": epoch,
                         "images_per_second": result["images_per_second"],
                         f"projected_{FULL_EPOCHS}_epochs_s": result["seconds"] + (FULL_EPOCHS - epochs) * epoch,
                         "metrics": {split: {key: values[key] for key in ("accuracy", "auc")}
                                     for split, values in result["metrics"].items()}}
    summary: Dict[str, object] = {"epochs": epochs, "device": figures["device"], "recipes": recipes}
    if {"ours", "jetson"} <= set(recipes):
        ours, jetson = recipes["ours"], recipes["jetson"]
        summary["speedup"] = {key: jetson[key] / ours[key] for key in
                              ("seconds", "median_epoch_s", f"projected_{FULL_EPOCHS}_epochs_s")}
        summary["ours_accuracy_lower_on"] = [split for split in ours["metrics"] if ours["metrics"][split]["accuracy"]
                                             < jetson["metrics"][split]["accuracy"]]
    return summary


def summarise(out: str) -> Dict[str, object]:
    """What the result files say, as far as they were written."""
    summary: Dict[str, object] = {}
    training = _load_json(os.path.join(out, "train_recipes.json"))
    if training:
        summary["training"] = training_summary(training)
    latency = _load_json(os.path.join(out, "gpu_latency.json"))
    if latency:
        summary["latency"] = {key: latency[key] for key in ("gpu", "batch1", "batch64",
                                                            "parity_fp16_vs_onnxruntime_fp32") if key in latency}
    benchmark = os.path.join(out, "benchmark.json")
    if os.path.isfile(benchmark):  # benchmark.py's own format: kept whole while it is small
        figures = _load_json(benchmark)
        small = figures is not None and os.path.getsize(benchmark) < 65536
        summary["benchmark"] = figures if small else {"file": "benchmark.json", "bytes": os.path.getsize(benchmark)}
    return summary


def _print_training(training: Dict, echo: Callable[[str], None]) -> None:
    recipes, projected = training["recipes"], f"projected_{FULL_EPOCHS}_epochs_s"
    names = [name for name in ("ours", "jetson") if name in recipes]
    speedup = training.get("speedup")
    echo(f"training, {training['epochs']} epoch(s) each on {training['device']}:".ljust(40)
         + "".join(f"{name:>12}" for name in names) + ("   jetson/ours" if speedup else ""))
    for key, label in (("seconds", "whole run (s)"), ("median_epoch_s", "median epoch (s)"),
                       (projected, f"{FULL_EPOCHS} epochs, projected (s)")):
        echo(f"  {label:<38}" + "".join(f"{recipes[name][key]:>12.1f}" for name in names)
             + (f"{speedup[key]:>14.2f}x" if speedup else ""))
    echo("  accuracy and AUC per split: ours at the threshold it saved, jetson's at argmax (as imagenet.py)")
    echo(f"    {'split':<36}" + "".join(f"{name + ' ' + key:>12}" for name in names for key in ("acc", "AUC")))
    for split in recipes[names[0]]["metrics"]:
        echo(f"    {split:<36}" + "".join(f"{recipes[name]['metrics'][split][key]:>12.4f}"
                                       for name in names for key in ("accuracy", "auc")))
    if speedup:
        lower = training["ours_accuracy_lower_on"]
        echo(f"  target: ours 10x faster ({speedup['seconds']:.2f}x whole run, {speedup[projected]:.2f}x projected), "
             f"accuracy at least jetson's: {'lower on ' + ', '.join(lower) if lower else 'yes, on every split'}")


def print_summary(summary: Dict, echo: Callable[[str], None]) -> None:
    """The table a session reads first: training time and ratio, accuracy per split, latency and ratio."""
    if "training" in summary:
        _print_training(summary["training"], echo)
    latency = summary.get("latency", {})
    for batch in ("batch1", "batch64"):
        if batch in latency:
            row = latency[batch]
            echo(f"latency {batch}: eager FP32 {row['eager_fp32_ms']:.3f} ms, FP16 + CUDA graph "
                 f"{row['ours_fp16_graph_ms']:.3f} ms, {row['ratio']:.2f}x")
