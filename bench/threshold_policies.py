"""Which decision-threshold policy holds on images the threshold never saw, over several trained models.

    python3 -m bench.train_recipes --recipes ours --epochs 12 --ours-args "--seed 1" --model-dir models/seed1
    python3 -m bench.threshold_policies models/seed1 models/seed2 models/seed3
    python3 -m bench.threshold_policies --policies youden,sensitivity:0.97 --data HOLDOUT models/seed*

Each MODEL_DIR is a train.py model dir trained with the ``IM-*`` normal series held out, as
bench/train_recipes.py lays the data out (``--data``: that layout, a folder with a ``series`` split, or
a prepared data set from which ``--holdout-series`` makes it again). For each model and policy:

- ``threshold``: the policy's threshold as train.py would ship it, chosen on validation pooled with its
  ``mixed`` copy (train/validation.py);
- cross-fitted decisions: validation's patients are split into stratified folds; the images of each
  fold are decided at the threshold the policy chooses on the other folds (with their ``mixed``
  copies), in validation, every proxy of it and the series. Sensitivity and specificity are then
  measured on images the threshold was not chosen on, which matters for a sensitivity target:
  scored on the images that set it, it would meet itself by construction. The series' normals are
  never seen by training or threshold; its pneumonia images are validation's, in their folds.

Each model's AUC per split, with its patient-bootstrap 95% interval, comes with them (threshold-free).
model_best was still chosen on all of validation, so validation's own figures keep a small optimism;
the series' normals carry none. Intervals are exact binomial (train/intervals.py). Writes JSON and a
picture of specificity against sensitivity per split, one point per model and policy.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from bench.machine import describe
from bench.train_recipes import SERIES_PROXY, held_out_data, load_everywhere, predict_everywhere
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import is_positive, positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.dataset import CachedSplit, find_classes
from cxr_jetson.train.hardware import select_device
from cxr_jetson.train.intervals import auc_interval, patient_groups, proportion_interval
from cxr_jetson.train.metrics import choose_threshold, parse_policy
from cxr_jetson.train.report import write_json
from cxr_jetson.train.shift import TRAINING_PROXY

VALIDATION = "val"
POOLED = (VALIDATION, f"{VALIDATION}~{TRAINING_PROXY}")  # what train.py chooses its threshold on
DEFAULT_POLICIES = "youden,sensitivity:0.98,sensitivity:0.97,sensitivity:0.96,sensitivity:0.95"
SHOWN = (VALIDATION, f"{VALIDATION}~mixed", f"{VALIDATION}~resolution", SERIES_PROXY)  # the console table's


def validation_folds(paths: Sequence[str], targets: np.ndarray, folds: int, seed: int) -> Dict[str, int]:
    """Validation image path -> its fold: patients kept whole, each fold with both classes in about
    validation's proportion."""
    groups = patient_groups(paths)
    for label in (0, 1):
        patients = len(np.unique(groups[targets == label]))
        if patients < folds:
            raise ToolkitError(f"validation has {patients} patient(s) of class {label}; --folds {folds} needs at "
                               "least as many in each class")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = {}
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(paths)), targets, groups)):
        fold_of.update({paths[index]: fold for index in held})
    return fold_of


def split_folds(paths: Sequence[str], fold_of: Dict[str, int], folds: int, seed: int) -> np.ndarray:
    """Each image's fold: validation's own for its images (and their proxy copies); images validation does
    not hold (the series' normals) get one per patient, at random."""
    groups = patient_groups(paths)
    drawn = np.random.default_rng(seed).integers(folds, size=int(groups.max()) + 1 if len(groups) else 0)
    return np.array([fold_of.get(path, drawn[group]) for path, group in zip(paths, groups)], dtype=int)


def cross_fitted_thresholds(scores: Dict[str, np.ndarray], targets: Dict[str, np.ndarray],
                            folds: Dict[str, np.ndarray], policy: str, count: int) -> np.ndarray:
    """The policy's threshold for each fold, chosen on the pooled splits' images of every other fold."""
    thresholds = []
    for fold in range(count):
        kept = [folds[name] != fold for name in POOLED]
        pooled_scores = np.concatenate([scores[name][keep] for name, keep in zip(POOLED, kept)])
        pooled_targets = np.concatenate([targets[name][keep] for name, keep in zip(POOLED, kept)])
        thresholds.append(choose_threshold(pooled_scores, pooled_targets, policy))
    return np.array(thresholds)


def rates(called: np.ndarray, targets: np.ndarray) -> Dict[str, float]:
    """Sensitivity, specificity and accuracy of 0/1 calls, each with its exact 95% interval."""
    result: Dict[str, float] = {}
    for name, kept in (("sensitivity", targets == 1), ("specificity", targets == 0),
                       ("accuracy", np.ones_like(targets, bool))):
        right = int(np.sum(called[kept] == targets[kept]))
        total = int(np.sum(kept))
        low, high = proportion_interval(right, total)
        result.update({name: right / total if total else float("nan"), f"{name}_low": low, f"{name}_high": high,
                       f"{name}_n": total})
    return result


def score_policies(predictions: Dict[str, Tuple[np.ndarray, CachedSplit]], positive: int, policies: List[str],
                   folds: int, seed: int) -> Dict[str, Dict]:
    """Per policy: the shipped threshold, the folds' thresholds, and per split the cross-fitted rates."""
    scores = {name: probabilities[:, positive] for name, (probabilities, _) in predictions.items()}
    targets = {name: (split.labels.numpy() == positive).astype(int) for name, (_, split) in predictions.items()}
    paths = {name: list(split.paths) for name, (_, split) in predictions.items()}
    fold_of = validation_folds(paths[VALIDATION], targets[VALIDATION], folds, seed)
    fold_index = {name: split_folds(paths[name], fold_of, folds, seed) for name in predictions}
    pooled_scores = np.concatenate([scores[name] for name in POOLED])
    pooled_targets = np.concatenate([targets[name] for name in POOLED])
    results = {}
    for policy in policies:
        per_fold = cross_fitted_thresholds(scores, targets, fold_index, policy, folds)
        splits = {name: rates(is_positive(scores[name], per_fold[fold_index[name]]).astype(int), targets[name])
                  for name in predictions}
        results[policy] = {"threshold": choose_threshold(pooled_scores, pooled_targets, policy),
                           "fold_thresholds": per_fold.tolist(), "splits": splits}
    return results


def auc_by_split(predictions: Dict[str, Tuple[np.ndarray, CachedSplit]], positive: int) -> Dict[str, Dict]:
    """AUC with its patient-bootstrap 95% interval on each split."""
    result = {}
    for name, (probabilities, split) in predictions.items():
        targets = (split.labels.numpy() == positive).astype(int)
        scores = probabilities[:, positive]
        low, high = auc_interval(scores, targets, patient_groups(split.paths))
        result[name] = {"auc": float(roc_auc_score(targets, scores)), "auc_low": low, "auc_high": high}
    return result


def best_checkpoint(model_dir: str) -> str:
    """model_best's path in MODEL_DIR, or a clear error when it has none."""
    path = os.path.join(model_dir, BEST_CHECKPOINT)
    if not os.path.isfile(path):
        raise ToolkitError(f"{model_dir}: no {BEST_CHECKPOINT}; train it first (bench.train_recipes --model-dir)")
    return path


def score_model(model_dir: str, data: str, classes: List[str], device: torch.device, policies: List[str],
                folds: int, seed: int, loaded: Dict[PreprocessSpec, Dict[str, CachedSplit]]) -> Dict:
    """The policies on one model; ``loaded`` keeps the decoded splits of each preprocessing for the next."""
    checkpoint = load_checkpoint(best_checkpoint(model_dir))
    positive = positive_index(classes, checkpoint.get("positive_class"))
    if positive is None:
        raise ToolkitError(f"{model_dir}: not a two-class model with a positive class; threshold policies need one")
    spec = preprocess_spec(checkpoint)
    if spec not in loaded:
        loaded[spec] = load_everywhere(data, classes, spec, series=True)
    predictions = predict_everywhere(model_from_checkpoint(checkpoint), loaded[spec], spec, device)
    return {"epoch": checkpoint.get("epoch"), "shipped_threshold": checkpoint.get("threshold"),
            "shipped_policy": checkpoint.get("threshold_policy"),
            "auc": auc_by_split(predictions, positive),
            "policies": score_policies(predictions, positive, policies, folds, seed)}


def scored_layout(requested: str, prefix: str, scratch: str) -> Tuple[str, List[str]]:
    """The held-out layout the models were trained on, and its classes: ``requested`` itself when it has a
    series split, else made again in SCRATCH from the prepared data set (bench.train_recipes)."""
    if requested and os.path.isdir(os.path.join(requested, SERIES_PROXY)):
        return requested, find_classes(os.path.join(requested, "train"))
    data, classes, _ = held_out_data(requested, prefix, scratch)
    return data, classes


def model_names(model_dirs: Sequence[str]) -> Dict[str, str]:
    """Each model dir's name in tables and pictures: the fewest trailing folders that tell it from the others
    (``s1`` alone, ``seeds/s1`` and ``mixup/s1`` together). The same folder twice is refused."""
    parts = {model_dir: os.path.abspath(model_dir).split(os.sep) for model_dir in model_dirs}
    if len({tuple(folders) for folders in parts.values()}) < len(parts):
        raise ToolkitError("a model dir is given twice; give each model once")
    depth = 1
    while True:
        names = {model_dir: "/".join(folders[-depth:]) for model_dir, folders in parts.items()}
        if len(set(names.values())) == len(names):
            return names
        depth += 1


def _cell(rates_of_split: Dict[str, float]) -> str:
    return f"{rates_of_split['sensitivity']:.3f} / {rates_of_split['specificity']:.3f}"


def table(results: Dict[str, Dict], policies: List[str]) -> str:
    """One row per policy and model: the shipped threshold, cross-fitted sensitivity / specificity per split,
    and the series' specificity with its interval; then each policy's range over the models."""
    names = model_names(list(results))
    header = f"{'policy':<18}{'model':<22}{'threshold':>10}" + "".join(f"{name:>22}" for name in SHOWN)
    lines = [header + f"{'series spec [95% CI]':>26}"]
    for policy in policies:
        for model, result in results.items():
            scored = result["policies"][policy]
            series = scored["splits"][SERIES_PROXY]
            lines.append(f"{policy:<18}{names[model]:<22}{scored['threshold']:>10.3f}"
                         + "".join(f"{_cell(scored['splits'][name]):>22}" for name in SHOWN)
                         + f"{series['specificity']:>12.3f} [{series['specificity_low']:.3f}, "
                           f"{series['specificity_high']:.3f}]")
        for measure in ("sensitivity", "specificity"):
            values = [result["policies"][policy]["splits"][SERIES_PROXY][measure] for result in results.values()]
            lines.append(f"{'':<18}series {measure} over the models: mean {np.mean(values):.3f}, "
                         f"range {min(values):.3f}-{max(values):.3f}")
    lines.append("AUC [95% CI]: " + ", ".join(SHOWN))
    for model, result in results.items():
        lines.append(f"{names[model]:<22}" + "".join(
            f"{result['auc'][name]['auc']:>10.4f} [{result['auc'][name]['auc_low']:.4f}, "
            f"{result['auc'][name]['auc_high']:.4f}]" for name in SHOWN))
    return "\n".join(lines)


def plot(results: Dict[str, Dict], policies: List[str], path: str) -> None:
    """Specificity against sensitivity on each shown split: one colour per policy, one marker per model,
    with the intervals as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(SHOWN), figsize=(4.6 * len(SHOWN), 4.4))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(policies)))
    markers = "osD^vP*X"
    names = model_names(list(results))
    for axis, name in zip(axes, SHOWN):
        for colour, policy in zip(colours, policies):
            for number, (model, result) in enumerate(results.items()):
                split = result["policies"][policy]["splits"][name]
                axis.errorbar(split["sensitivity"], split["specificity"],
                              xerr=[[split["sensitivity"] - split["sensitivity_low"]],
                                    [split["sensitivity_high"] - split["sensitivity"]]],
                              yerr=[[split["specificity"] - split["specificity_low"]],
                                    [split["specificity_high"] - split["specificity"]]],
                              fmt=markers[number % len(markers)], color=colour, alpha=0.8, capsize=2,
                              label=policy if number == 0 else None)
        axis.set(title=name, xlabel="sensitivity (cross-fitted)", ylabel="specificity (cross-fitted)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    figure.suptitle("Threshold policies on images the threshold never saw; markers: "
                    + ", ".join(f"{markers[i % len(markers)]} {names[m]}"
                                for i, m in enumerate(results)), fontsize=9)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # beside the JSON, whose folder exists by now
    plt.close(figure)


def add_held_out_arguments(parser: argparse.ArgumentParser, output: str) -> None:
    """The arguments of a benchmark that scores model dirs on the held-out layout with cross-fitted folds
    (this one and bench/ensembles.py); ``output`` names the default JSON in bench/results."""
    parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR",
                        help="train.py model dirs trained with the series held out (bench.train_recipes)")
    parser.add_argument("--data", default="", help="the held-out layout (a folder with a series split), or a "
                                                   "prepared data set (default: as bench.train_recipes finds it)")
    parser.add_argument("--holdout-series", default="IM", metavar="PREFIX",
                        help="the normal series the models were trained without, when --data has no series split")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--folds", type=int, default=5, help="validation folds of the cross-fitting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--output", default=os.path.join("bench", "results", output),
                        help="figures (JSON); the picture goes next to it as .png")


def check_folds(folds: int) -> None:
    if folds < 2:
        raise ToolkitError(f"--folds {folds}: cross-fitting needs at least 2 folds")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare decision-threshold policies on images the threshold "
                                                 "never saw, over several trained models (seeds).")
    add_held_out_arguments(parser, "threshold_policies.json")
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="comma-separated train.py threshold policies")
    return parser


def main(args: argparse.Namespace) -> int:
    policies = [policy for policy in args.policies.split(",") if policy]
    for policy in policies:
        parse_policy(policy)
    check_folds(args.folds)
    model_names(args.model_dirs)
    for model_dir in args.model_dirs:
        best_checkpoint(model_dir)
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        data, classes = scored_layout(args.data, args.holdout_series, scratch)
        loaded: Dict[PreprocessSpec, Dict[str, CachedSplit]] = {}
        results = {model_dir: score_model(model_dir, data, classes, device, policies, args.folds, args.seed, loaded)
                   for model_dir in args.model_dirs}
    print(f"\ncross-fitted over {args.folds} validation folds; each cell is sensitivity / specificity")
    print(table(results, policies))
    write_json(args.output, {"machine": f"{describe()}, torch {torch.__version__}", "folds": args.folds,
                             "seed": args.seed, "policies": policies, "results": results})
    picture = os.path.splitext(args.output)[0] + ".png"
    plot(results, policies, picture)
    print(f"figures written to {args.output} and {picture}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.threshold_policies")
