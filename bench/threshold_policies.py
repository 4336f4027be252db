"""Which decision-threshold policy holds on images the threshold never saw, over several trained models.

    python3 -m bench.train_recipes --recipes ours --epochs 12 --ours-args "--seed 1" --model-dir models/seed1
    python3 -m bench.threshold_policies models/seed1 models/seed2 models/seed3
    python3 -m bench.threshold_policies --policies youden,sensitivity:0.97 --data HOLDOUT models/seed*
    python3 -m bench.threshold_policies --policies sensitivity:0.96 models/seed1 models/seed1-mixup \
        --pair models/seed1 models/seed1-mixup

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
``--pair BASELINE CANDIDATE`` (repeatable, one per seed) adds the candidate's differences from the baseline,
AUC and each policy's cross-fitted sensitivity and specificity, with intervals from one patient bootstrap
shared by both models (train/intervals.py), and their mean over the pairs: two models scored on the same
images share most of their luck, so two overlapping intervals do not mean "no difference"; the paired
interval says whether there is one. It covers which patients were drawn, not which seeds.
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
from cxr_jetson.train.intervals import (
    auc_interval,
    paired_auc_difference,
    paired_rate_difference,
    patient_groups,
    proportion_interval,
)
from cxr_jetson.train.metrics import choose_threshold, parse_policy
from cxr_jetson.train.report import write_json
from cxr_jetson.train.shift import TRAINING_PROXY

VALIDATION = "val"
POOLED = (VALIDATION, f"{VALIDATION}~{TRAINING_PROXY}")  # what train.py chooses its threshold on
DEFAULT_POLICIES = "youden,sensitivity:0.98,sensitivity:0.97,sensitivity:0.96,sensitivity:0.95"
SHOWN = (VALIDATION, f"{VALIDATION}~mixed", f"{VALIDATION}~resolution", SERIES_PROXY)  # the console table's
Predictions = Dict[str, Tuple[np.ndarray, CachedSplit]]  # split -> (probabilities, its images)


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


def cross_fitted_calls(predictions: Predictions, positive: int, policies: List[str],
                       folds: int, seed: int) -> Dict[str, Dict]:
    """Per policy: the shipped threshold, the folds' thresholds, and per split each image's cross-fitted call
    (0/1) and target."""
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
        results[policy] = {"threshold": choose_threshold(pooled_scores, pooled_targets, policy),
                           "fold_thresholds": per_fold.tolist(), "targets": targets,
                           "calls": {name: is_positive(scores[name], per_fold[fold_index[name]]).astype(int)
                                     for name in predictions}}
    return results


def score_policies(predictions: Predictions, positive: int, policies: List[str],
                   folds: int, seed: int) -> Dict[str, Dict]:
    """Per policy: the shipped threshold, the folds' thresholds, and per split the cross-fitted rates."""
    results = {}
    for policy, decided in cross_fitted_calls(predictions, positive, policies, folds, seed).items():
        results[policy] = {"threshold": decided["threshold"], "fold_thresholds": decided["fold_thresholds"],
                           "splits": {name: rates(calls, decided["targets"][name])
                                      for name, calls in decided["calls"].items()}}
    return results


def auc_by_split(predictions: Predictions, positive: int) -> Dict[str, Dict]:
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
                folds: int, seed: int,
                loaded: Dict[PreprocessSpec, Dict[str, CachedSplit]]) -> Tuple[Dict, Predictions]:
    """The policies on one model, and its predictions (for paired comparisons); ``loaded`` keeps the decoded
    splits of each preprocessing for the next model."""
    checkpoint = load_checkpoint(best_checkpoint(model_dir))
    positive = positive_index(classes, checkpoint.get("positive_class"))
    if positive is None:
        raise ToolkitError(f"{model_dir}: not a two-class model with a positive class; threshold policies need one")
    spec = preprocess_spec(checkpoint)
    if spec not in loaded:
        loaded[spec] = load_everywhere(data, classes, spec, series=True)
    predictions = predict_everywhere(model_from_checkpoint(checkpoint), loaded[spec], spec, device)
    return {"epoch": checkpoint.get("epoch"), "shipped_threshold": checkpoint.get("threshold"),
            "shipped_policy": checkpoint.get("threshold_policy"), "positive": positive,
            "auc": auc_by_split(predictions, positive),
            "policies": score_policies(predictions, positive, policies, folds, seed)}, predictions


def _difference(observed: float, low: float, high: float) -> Dict[str, float]:
    return {"difference": observed, "low": low, "high": high}


def compare_pairs(pairs: Sequence[Tuple[str, str]], predictions_of: Dict[str, Predictions], positive: int,
                  policies: List[str], folds: int, seed: int, mean_label: str = "") -> Dict[str, Dict]:
    """Candidate minus baseline on every split: the AUC and, per policy, the cross-fitted sensitivity and
    specificity, each with its paired patient-bootstrap 95% interval (train/intervals.py); for each pair and,
    with several pairs (seeds), for their mean. Keyed ``BASELINE -> CANDIDATE`` and ``mean_label`` (default
    ``mean of N pairs``)."""
    calls_of = {model: cross_fitted_calls(predictions_of[model], positive, policies, folds, seed)
                for pair in pairs for model in pair}
    groups_of = {}
    for name, (_, split) in predictions_of[pairs[0][0]].items():
        for model in calls_of:
            if list(predictions_of[model][name][1].paths) != list(split.paths):
                raise ToolkitError(f"{model} was not scored on the same {name} images as {pairs[0][0]}")
        groups_of[name] = patient_groups(split.paths)
    comparisons = [(f"{baseline} -> {candidate}", [(baseline, candidate)]) for baseline, candidate in pairs]
    if len(pairs) > 1:
        comparisons.append((mean_label or f"mean of {len(pairs)} pairs", list(pairs)))
    results = {}
    for label, chosen in comparisons:
        per_split = {}
        for name, groups in groups_of.items():
            targets = calls_of[chosen[0][0]][policies[0]]["targets"][name]
            scores = [np.stack([predictions_of[pair[side]][name][0][:, positive] for pair in chosen]) for side in (0, 1)]
            entry = {"auc": _difference(*paired_auc_difference(*scores, targets, groups))}
            for policy in policies:
                right = [np.stack([calls_of[pair[side]][policy]["calls"][name] == targets for pair in chosen])
                         for side in (0, 1)]
                entry[policy] = {measure: _difference(*paired_rate_difference(right[0][:, kept], right[1][:, kept],
                                                                              groups[kept]))
                                 for measure, kept in (("sensitivity", targets == 1), ("specificity", targets == 0))}
            per_split[name] = entry
        results[label] = per_split
    return results


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


def _signed(difference: Dict[str, float], digits: int) -> str:
    return f"{difference['difference']:+.{digits}f} [{difference['low']:+.{digits}f}, {difference['high']:+.{digits}f}]"


def _pair_label(label: str, names: Dict[str, str]) -> str:
    models = label.split(" -> ")
    return " -> ".join(names[model] for model in models) if len(models) == 2 else label


def pairs_table(pairs: Dict[str, Dict], policies: List[str], names: Dict[str, str]) -> str:
    """Per pair (and their mean): the AUC and each policy's sensitivity and specificity differences on the
    shown splits, with their paired intervals."""
    lines = [f"{'candidate minus baseline':<36}" + "".join(f"{name:>30}" for name in SHOWN)]
    for label, per_split in pairs.items():
        lines.append(_pair_label(label, names))
        lines.append(f"{'  AUC':<36}" + "".join(f"{_signed(per_split[name]['auc'], 4):>30}" for name in SHOWN))
        for policy in policies:
            for measure in ("sensitivity", "specificity"):
                lines.append(f"{'  ' + measure[:4] + ' at ' + policy:<36}"
                             + "".join(f"{_signed(per_split[name][policy][measure], 3):>30}" for name in SHOWN))
    return "\n".join(lines)


def plot_pairs(pairs: Dict[str, Dict], policies: List[str], names: Dict[str, str], path: str) -> None:
    """A forest plot per measure: each pair's (and the mean's) difference with its interval, per shown split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("AUC", lambda entry: entry["auc"])] + [
        (f"specificity at {policy}", lambda entry, policy=policy: entry[policy]["specificity"]) for policy in policies]
    rows = [(label, name) for name in SHOWN for label in pairs]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.28 * len(rows) + 1.6), sharey=True)
    colours = plt.get_cmap("tab10")(np.arange(len(pairs)) % 10)
    for axis, (title, measure) in zip(np.atleast_1d(axes), panels):
        for row, (label, name) in enumerate(rows):
            difference = measure(pairs[label][name])
            axis.errorbar(difference["difference"], row, xerr=[[difference["difference"] - difference["low"]],
                                                               [difference["high"] - difference["difference"]]],
                          fmt="D" if "mean of" in label else "o", capsize=2,
                          color=colours[list(pairs).index(label)])
        axis.axvline(0, color="grey", lw=0.8)
        axis.set(title=title, xlabel="candidate - baseline")
        axis.grid(alpha=0.3)
    axes = np.atleast_1d(axes)
    axes[0].set_yticks(range(len(rows)), [f"{name}: {_pair_label(label, names)}" for label, name in rows], fontsize=7)
    axes[0].invert_yaxis()
    figure.suptitle("Paired differences with 95% intervals from one patient bootstrap for both models "
                    "(the intervals cover which patients were drawn, not which seeds)", fontsize=9)
    figure.savefig(path, dpi=110, bbox_inches="tight")
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
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("BASELINE", "CANDIDATE"),
                        help="also report CANDIDATE minus BASELINE (two of the model dirs) with paired intervals; "
                             "repeat for several seeds, whose mean difference is reported too")
    return parser


def main(args: argparse.Namespace) -> int:
    policies = [policy for policy in args.policies.split(",") if policy]
    for policy in policies:
        parse_policy(policy)
    check_folds(args.folds)
    names = model_names(args.model_dirs)
    for model_dir in args.model_dirs:
        best_checkpoint(model_dir)
    pairs = [tuple(pair) for pair in args.pair]
    unlisted = sorted({model_dir for pair in pairs for model_dir in pair} - set(args.model_dirs))
    if unlisted:
        raise ToolkitError(f"--pair {unlisted[0]}: not one of the model dirs given; list it among them")
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        data, classes = scored_layout(args.data, args.holdout_series, scratch)
        loaded: Dict[PreprocessSpec, Dict[str, CachedSplit]] = {}
        scored = {model_dir: score_model(model_dir, data, classes, device, policies, args.folds, args.seed, loaded)
                  for model_dir in args.model_dirs}
    results = {model_dir: result for model_dir, (result, _) in scored.items()}
    print(f"\ncross-fitted over {args.folds} validation folds; each cell is sensitivity / specificity")
    print(table(results, policies))
    compared = {}
    if pairs:
        predictions_of = {model_dir: predictions for model_dir, (_, predictions) in scored.items()}
        compared = compare_pairs(pairs, predictions_of, results[pairs[0][0]]["positive"], policies, args.folds,
                                 args.seed)
        print("\npaired differences, candidate minus baseline, with paired patient-bootstrap 95% intervals "
              "(images, not seeds)")
        print(pairs_table(compared, policies, names))
    write_json(args.output, {"machine": f"{describe()}, torch {torch.__version__}", "folds": args.folds,
                             "seed": args.seed, "policies": policies, "results": results, "pairs": compared})
    stem = os.path.splitext(args.output)[0]
    plot(results, policies, stem + ".png")
    written = [args.output, stem + ".png"]
    if compared:
        plot_pairs(compared, policies, names, stem + "_pairs.png")
        written.append(stem + "_pairs.png")
    print("figures written to " + ", ".join(written))
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.threshold_policies")
