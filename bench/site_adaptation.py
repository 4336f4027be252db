"""Accuracy at a new site: a model as trained, with its batch-norm statistics recalibrated on clean
training images (train.py's ``--recalibrate-bn``), and that model adapted to each site (adapt.py).

    python3 -m bench.site_adaptation --model-dir models/a --model-dir models/b ...

Each model dir must hold a model trained without ``--recalibrate-bn`` (train.py's default), so that one
run shows both recipes from the same trained weights:

- ``as trained``: model_best at its saved threshold;
- ``recalibrated``: its batch-norm statistics measured on the unaugmented training images and the
  threshold chosen again on validation plus its ``mixed`` copy, as train.py does with the flag;
- ``+ adapted``: the recalibrated model adapted to the site's unlabelled images (class prior by EM,
  batch-norm statistics at the source's class shares; train/adapt.py) at that threshold.

Sites: validation and each shift proxy of train/shift.py, each with validation's class mix (75%
pneumonia) and a balanced one (every normal and as many pneumonia images, drawn once). They are
built from validation images, on which the threshold and model_best were chosen: they show what
shift does to a model and what adaptation recovers, not the figures to expect on new patients.
Every figure carries its 95% interval (train/intervals.py). Writes JSON and a picture.
"""
from __future__ import annotations

import argparse
import copy
import os
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.machine import describe  # noqa: E402
from cxr_jetson.core.cli import run_cli  # noqa: E402
from cxr_jetson.core.decision import positive_index  # noqa: E402
from cxr_jetson.core.errors import ToolkitError  # noqa: E402
from cxr_jetson.core.metric_registry import format_with_interval  # noqa: E402
from cxr_jetson.core.names import BEST_CHECKPOINT  # noqa: E402
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec  # noqa: E402
from cxr_jetson.networks.model import model_from_checkpoint  # noqa: E402
from cxr_jetson.train.adapt import adapt_to_site  # noqa: E402
from cxr_jetson.train.dataset import CachedSplit, load_split  # noqa: E402
from cxr_jetson.train.intervals import patient_groups  # noqa: E402
from cxr_jetson.train.loop import predict_probabilities  # noqa: E402
from cxr_jetson.train.metrics import evaluate_probabilities  # noqa: E402
from cxr_jetson.train.report import write_json  # noqa: E402
from cxr_jetson.train.shift import PROXIES, TRAINING_PROXY, load_with_proxies  # noqa: E402
from cxr_jetson.train.site_shift import reestimate_batch_norm  # noqa: E402
from cxr_jetson.train.validation import validate  # noqa: E402

VARIANTS = ("as trained", "recalibrated", "+ adapted")
MIXES = ("val mix", "balanced")
REPORTED = ("accuracy", "sensitivity", "specificity", "auc")


def _sites(splits: Dict[str, CachedSplit], seed: int = 0) -> Dict[Tuple[str, str], CachedSplit]:
    """Every split with validation's class mix and with a balanced one (the same images for every proxy)."""
    labels = splits["val"].labels.numpy()
    normals = np.flatnonzero(labels == 0)
    pneumonia = np.random.default_rng(seed).choice(np.flatnonzero(labels == 1), len(normals), replace=False)
    balanced = np.sort(np.r_[normals, pneumonia])
    sites = {}
    for name, split in splits.items():
        sites[(name, MIXES[0])] = split
        sites[(name, MIXES[1])] = CachedSplit(name, split.images[balanced], split.labels[balanced],
                                              [split.paths[i] for i in balanced])
    return sites


def _metrics(probabilities: np.ndarray, split: CachedSplit, positive: int, threshold: float) -> Dict[str, float]:
    return evaluate_probabilities(probabilities, split.labels.numpy(), positive, threshold, intervals=True,
                                  groups=patient_groups(split.paths))


def _recalibrated(model: torch.nn.Module, train: CachedSplit, val_splits: List[CachedSplit], spec, device,
                  batch_size: int, positive: int, policy: str) -> Tuple[torch.nn.Module, float]:
    """What train.py's end does with --recalibrate-bn: statistics on clean training images, threshold again."""
    recalibrated = copy.deepcopy(model)
    reestimate_batch_norm(recalibrated, train.images.numpy(), spec, device, batch_size)
    settled = validate(recalibrated, val_splits, spec, device, batch_size, False, positive, policy)
    return recalibrated, float(settled.threshold)


def evaluate_model(model_dir: str, data: str, device: torch.device, batch_size: int, workers: int) -> Dict:
    checkpoint = load_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT))
    if checkpoint.get("batch_norm"):
        raise ToolkitError(f"{model_dir} was trained with --recalibrate-bn; this comparison needs a model trained "
                           "without it")
    classes, spec = list(checkpoint["classes"]), preprocess_spec(checkpoint)
    positive = positive_index(classes, checkpoint.get("positive_class"))
    model = model_from_checkpoint(checkpoint).to(device).eval()
    splits = load_with_proxies(data, "val", classes, spec, workers, PROXIES)
    train = load_split(data, "train", classes, spec, workers)
    recalibrated, new_threshold = _recalibrated(model, train, [splits["val"], splits[f"val~{TRAINING_PROXY}"]], spec,
                                                device, batch_size, positive, checkpoint["threshold_policy"])
    val_probabilities = predict_probabilities(recalibrated, splits["val"], spec, device, batch_size, False, "val")
    rows = []
    for (name, mix), site in _sites(splits).items():
        images = site.images.numpy()
        adaptation = adapt_to_site(recalibrated, splits["val"], images, spec, device, batch_size, classes,
                                   val_probabilities=val_probabilities)
        found = {
            VARIANTS[0]: _metrics(predict_probabilities(model, site, spec, device, batch_size, False, name), site,
                                  positive, checkpoint["threshold"]),
            VARIANTS[1]: _metrics(adaptation.before, site, positive, new_threshold),
            VARIANTS[2]: _metrics(adaptation.after, site, positive, new_threshold)}
        rows.append({"site": name, "mix": mix, "images": len(site), "site_prior_estimate":
                     float(adaptation.site_prior[positive]), "true_prior": float(np.mean(site.labels.numpy() == positive)),
                     "metrics": found})
        print(f"{name:16s} {mix:9s} " + " | ".join(f"{variant}: {format_with_interval(found[variant], 'accuracy')}"
                                                     for variant in VARIANTS))
    return {"model_dir": model_dir, "seed": (checkpoint.get("args") or {}).get("seed"),
            "epochs": (checkpoint.get("args") or {}).get("epochs"),
            "thresholds": {VARIANTS[0]: checkpoint["threshold"], VARIANTS[1]: new_threshold}, "rows": rows}


def _plot(models: List[Dict], path: str) -> None:
    """Accuracy, sensitivity and specificity per site, each variant with its 95% interval (first model)."""
    rows = models[0]["rows"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.5), sharey=True)
    for axis, key in zip(axes, ("accuracy", "sensitivity", "specificity")):
        for offset, variant in enumerate(VARIANTS):
            values = np.array([row["metrics"][variant][key] for row in rows])
            lows = np.array([row["metrics"][variant][f"{key}_low"] for row in rows])
            highs = np.array([row["metrics"][variant][f"{key}_high"] for row in rows])
            positions = np.arange(len(rows)) + (offset - 1) * 0.25
            axis.errorbar(values, positions, xerr=[values - lows, highs - values], fmt="o", capsize=2,
                          label=variant)
        axis.set(title=key, xlim=(0.6, 1.0))
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{row['site']} ({row['mix']})" for row in rows])
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower left")
    figure.suptitle(f"{models[0]['model_dir']} (seed {models[0]['seed']}, {models[0]['epochs']} epochs): "
                    "95% intervals")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    models = [evaluate_model(model_dir, args.data, device, args.batch_size, args.workers)
              for model_dir in args.model_dir]
    write_json(args.output, {"machine": describe(), "data": args.data, "models": models})
    _plot(models, os.path.splitext(args.output)[0] + ".png")
    print(f"=> wrote {args.output} and its picture")
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", action="append", required=True, help="a model trained without "
                        "--recalibrate-bn (repeat for several seeds)")
    parser.add_argument("--data", default="data/pneumonia")
    parser.add_argument("--output", default=os.path.join("bench", "results", "site_adaptation.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    run_cli(lambda: main(parser.parse_args()), "bench.site_adaptation")


if __name__ == "__main__":
    cli()
