"""Small ensembles and test-time mirroring: what they add on images the threshold never saw, and what
they cost per image.

    python3 -m bench.train_recipes --recipes ours --epochs 12 --ours-args "--seed 1" --model-dir models/seed1
    python3 -m bench.ensembles models/seed1 models/seed2 models/seed3
    python3 -m bench.ensembles --data HOLDOUT --policy youden models/seed*

The MODEL_DIRs are train.py model dirs of one preprocessing, trained with the ``IM-*`` normal series held
out (the layout of bench/train_recipes.py, as for bench/threshold_policies.py). Scored variants:

- each model alone, and each model averaged with its mirror image (training mirrors half its images, so
  the mirror view is one the model has learnt; a chest X-ray's anatomy is not symmetric, which is why it
  is a second view and not a replacement);
- with two or more models, their ensemble: the mean of the members' softmax probabilities, with and
  without the mirror view.

Every variant is scored the same way: the AUC with its patient-bootstrap 95% interval, and sensitivity and
specificity at the threshold policy (train.py's default unless ``--policy``) cross-fitted over validation's
patient folds (bench/threshold_policies.py), on validation, each shift proxy and the unseen series. What a
view or member adds is judged on the same images, with paired intervals (one patient bootstrap for both
sides): each mirror view against its model, the ensemble against each member and their mean, and the
ensemble's mirror view against the ensemble (``pairs`` in the JSON, ``*_pairs.png``). The
cost is each variant's batch-1 inference time on this machine, the variants timed in interleaved rounds
in one process, as a ratio to one model alone; decoding and the rest of the device path are not
repeated per view or member, so the end-to-end cost grows by less than this ratio.

The cost is timed on each variant as one network, the form it would take in a single exported ONNX:
MeanProbabilities returns the log of the mean probability, whose softmax is that mean, so it keeps the
contract of any model (one input, class scores out).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from bench.machine import describe
from bench.threshold_policies import (
    SERIES_PROXY,
    SHOWN,
    VALIDATION,
    Predictions,
    add_held_out_arguments,
    auc_by_split,
    best_checkpoint,
    check_folds,
    compare_pairs,
    model_names,
    pairs_table,
    plot_pairs,
    score_policies,
    scored_layout,
)
from bench.train_recipes import load_everywhere, predict_everywhere
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.hardware import select_device
from cxr_jetson.train.metrics import DEFAULT_POLICY, parse_policy
from cxr_jetson.train.report import write_json

ENSEMBLE = "ensemble"
MIRROR = "+mirror"
MIRRORED = "~mirrored"
SMALLEST_PROBABILITY = 1e-12  # keeps the log finite where every view gives a class exactly zero


class Mirrored(nn.Module):
    """A classifier shown the left-right mirror image of its input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(torch.flip(images, dims=[-1]))


class MeanProbabilities(nn.Module):
    """The log of the mean softmax probability of several classifiers (members, views): its softmax is that
    mean, so it takes a single classifier's place wherever softmax is applied to the outputs."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(model(images).float(), dim=1) for model in self.models])
        return torch.log(probabilities.mean(0).clamp_min(SMALLEST_PROBABILITY))


def variant_parts(names: Sequence[str]) -> Dict[str, List[str]]:
    """Variant name -> the single views it averages: each model alone and with its mirror view (named
    ``<model>~mirrored``); with two or more models, their ensemble with and without the mirror view."""
    parts = {}
    for name in names:
        parts[name] = [name]
        parts[name + MIRROR] = [name, name + MIRRORED]
    if len(names) > 1:
        parts[f"{ENSEMBLE} of {len(names)}"] = list(names)
        parts[f"{ENSEMBLE} of {len(names)}{MIRROR}"] = [view for name in names for view in (name, name + MIRRORED)]
    return parts


def view_network(view: str, members: Dict[str, nn.Module]) -> nn.Module:
    """The network of one single view: a member, or a member shown the mirror image."""
    if view.endswith(MIRRORED):
        return Mirrored(members[view[:-len(MIRRORED)]])
    return members[view]


def variant_network(views: Sequence[str], members: Dict[str, nn.Module]) -> nn.Module:
    """One network for a variant, as it would be exported: the view itself, or the mean of its views."""
    networks = [view_network(view, members) for view in views]
    return networks[0] if len(networks) == 1 else MeanProbabilities(networks)


def variant_comparisons(names: Sequence[str]) -> Dict[str, List[Tuple[str, str]]]:
    """What each added view or member is judged against on the same images, as (baseline, candidate) pairs:
    every model's mirror view against the model alone; with two or more models, the ensemble against each
    member (the pairs' mean: against the average single model) and its mirror view against the ensemble."""
    comparisons = {"mirror view": [(name, name + MIRROR) for name in names]}
    if len(names) > 1:
        ensemble = f"{ENSEMBLE} of {len(names)}"
        comparisons["ensemble"] = [(name, ensemble) for name in names]
        comparisons["ensemble's mirror view"] = [(ensemble, ensemble + MIRROR)]
    return comparisons


def combined_predictions(view_predictions: Dict[str, Predictions], views: Sequence[str]) -> Predictions:
    """Per split, the mean of the probabilities of ``views``: what variant_network gives, without running
    each member again for every variant it takes part in."""
    splits = view_predictions[views[0]]
    return {split: (np.mean([view_predictions[view][split][0] for view in views], axis=0), cached)
            for split, (_, cached) in splits.items()}


def inference_costs(networks: Dict[str, nn.Module], image: np.ndarray, repeats: int) -> Dict[str, float]:
    """Median batch-1 inference milliseconds of each network on one prepared image, the networks timed in
    interleaved rounds so that the machine's drift falls on all of them alike."""
    inputs = torch.from_numpy(image)
    timings: Dict[str, List[float]] = {name: [] for name in networks}
    with torch.inference_mode():
        for network in networks.values():  # warm-up: first calls allocate and pick kernels
            network.eval()(inputs)
        for _ in range(repeats):
            for name, network in networks.items():
                start = time.perf_counter()
                network(inputs)
                timings[name].append((time.perf_counter() - start) * 1000.0)
    return {name: float(np.median(values)) for name, values in timings.items()}


def load_members(model_dirs: Sequence[str]) -> Tuple[Dict[str, nn.Module], PreprocessSpec, List[str], int]:
    """Each model dir's network (named as bench.threshold_policies.model_names names it), with the
    preprocessing, classes and positive class they share; refuses members that do not share them, since they
    could not run on one prepared input."""
    members, specs, class_lists = {}, set(), set()
    names = model_names(model_dirs)
    for model_dir in model_dirs:
        checkpoint = load_checkpoint(best_checkpoint(model_dir))
        classes = tuple(checkpoint.get("classes") or ())
        positive = positive_index(list(classes), checkpoint.get("positive_class"))
        if positive is None:
            raise ToolkitError(f"{model_dir}: not a two-class model with a positive class")
        members[names[model_dir]] = model_from_checkpoint(checkpoint)
        specs.add(preprocess_spec(checkpoint))
        class_lists.add((classes, positive))
    if len(specs) > 1 or len(class_lists) > 1:
        raise ToolkitError("the models differ in preprocessing or classes; an ensemble needs one input and one "
                           "class list")
    classes, positive = class_lists.pop()
    return members, specs.pop(), list(classes), positive


def score_variants(model_dirs: Sequence[str], data: str, classes_wanted: List[str], policy: str, folds: int,
                   seed: int, repeats: int, device: torch.device) -> Tuple[Dict, Dict]:
    """Every variant's AUC and cross-fitted rates per split with its batch-1 inference cost, and the paired
    differences of variant_comparisons (bench.threshold_policies.compare_pairs)."""
    members, spec, classes, positive = load_members(model_dirs)
    if classes != classes_wanted:
        raise ToolkitError(f"the models' classes {classes} are not the data's {classes_wanted}")
    splits = load_everywhere(data, classes, spec, series=True)
    parts = variant_parts(list(members))
    views = sorted({view for variant in parts.values() for view in variant})
    view_predictions = {view: predict_everywhere(view_network(view, members), splits, spec, device) for view in views}
    networks = {name: variant_network(variant, members).cpu() for name, variant in parts.items()}
    costs = inference_costs(networks, normalize(splits[VALIDATION].images[:1].numpy(), spec), repeats)
    alone = float(np.mean([costs[name] for name in members]))
    predictions_of = {name: combined_predictions(view_predictions, variant) for name, variant in parts.items()}
    results = {name: {"views": len(variant), "ms_per_image": costs[name], "cost_ratio": costs[name] / alone,
                      "auc": auc_by_split(predictions_of[name], positive),
                      **score_policies(predictions_of[name], positive, [policy], folds, seed)[policy]}
               for name, variant in parts.items()}
    pairs = {}
    for title, chosen in variant_comparisons(list(members)).items():
        pairs.update(compare_pairs(chosen, predictions_of, positive, [policy], folds, seed,
                                   mean_label=f"{title}: mean of {len(chosen)} pairs"))
    return results, pairs


def _singles_first(name: str) -> Tuple[bool, str]:
    return name.startswith(ENSEMBLE), name


def table(results: Dict[str, Dict], policy: str) -> str:
    """One row per variant: AUC and cross-fitted sensitivity / specificity on the shown splits, the series'
    specificity with its interval, and the cost."""
    lines = [f"{'variant':<24}{'views':>6}" + "".join(f"{name:>28}" for name in SHOWN)
             + f"{'series spec [95% CI]':>24}{'ms/image':>10}{'cost':>7}",
             f"{'':<30}" + "".join(f"{'AUC  sens / spec':>28}" for _ in SHOWN) + f"   (at {policy}, cross-fitted)"]
    for name in sorted(results, key=_singles_first):
        result = results[name]
        cells = "".join(f"{result['auc'][split]['auc']:>12.4f}  {result['splits'][split]['sensitivity']:.3f} / "
                        f"{result['splits'][split]['specificity']:.3f}" for split in SHOWN)
        series = result["splits"][SERIES_PROXY]
        lines.append(f"{name:<24}{result['views']:>6}{cells}{series['specificity']:>10.3f} "
                     f"[{series['specificity_low']:.3f}, {series['specificity_high']:.3f}]"
                     f"{result['ms_per_image']:>10.1f}{result['cost_ratio']:>6.1f}x")
    return "\n".join(lines)


def plot(results: Dict[str, Dict], policy: str, path: str) -> None:
    """Per shown split, each variant's AUC with its interval; a last panel of the series' cross-fitted
    specificity at the policy with its interval, against the cost."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted(results, key=_singles_first)
    figure, axes = plt.subplots(1, len(SHOWN) + 1, figsize=(4.2 * (len(SHOWN) + 1), 4.6),
                                gridspec_kw={"wspace": 0.3})
    colours = ["tab:red" if name.startswith(ENSEMBLE) else "tab:blue" for name in names]
    for axis, split in zip(axes, SHOWN):
        for row, (name, colour) in enumerate(zip(names, colours)):
            auc = results[name]["auc"][split]
            axis.errorbar(auc["auc"], row, xerr=[[auc["auc"] - auc["auc_low"]], [auc["auc_high"] - auc["auc"]]],
                          fmt="D" if name.endswith(MIRROR) else "o", color=colour, capsize=2)
        axis.set(title=split, xlabel="AUC (95% CI)", yticks=range(len(names)),
                 yticklabels=names if axis is axes[0] else [])
        axis.invert_yaxis()
        axis.grid(alpha=0.3)
    last = axes[-1]
    for name, colour in zip(names, colours):
        series = results[name]["splits"][SERIES_PROXY]
        last.errorbar(results[name]["cost_ratio"], series["specificity"],
                      yerr=[[series["specificity"] - series["specificity_low"]],
                            [series["specificity_high"] - series["specificity"]]],
                      fmt="D" if name.endswith(MIRROR) else "o", color=colour, capsize=2)
    last.set(title=f"series specificity at {policy}", xlabel="inference cost (x one model)",
             ylabel="specificity (cross-fitted, 95% CI)")
    last.grid(alpha=0.3)
    figure.suptitle("Single models (blue) and ensembles (red); diamonds average the mirror view", fontsize=10)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # beside the JSON, whose folder exists by now
    plt.close(figure)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Score single models, their mirror view and their ensemble on "
                                                 "images the threshold never saw, with the cost per image "
                                                 "(timed on the CPU). The models must share one preprocessing.")
    add_held_out_arguments(parser, "ensembles.json")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="the train.py threshold policy cross-fitted")
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1 rounds per variant")
    return parser


def main(args: argparse.Namespace) -> int:
    parse_policy(args.policy)
    check_folds(args.folds)
    if args.repeats < 1:
        raise ToolkitError(f"--repeats {args.repeats}: time at least one round")
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        data, classes = scored_layout(args.data, args.holdout_series, scratch)
        results, pairs = score_variants(args.model_dirs, data, classes, args.policy, args.folds, args.seed,
                                        args.repeats, device)
    print(f"\nAUC, and at {args.policy} cross-fitted over {args.folds} validation folds, sensitivity / specificity; "
          f"cost: batch-1 inference against one model alone")
    print(table(results, args.policy))
    variants = {name: name for name in results}  # variants are named already; pairs_table renames model dirs
    print("\npaired differences, candidate minus baseline, with paired patient-bootstrap 95% intervals")
    print(pairs_table(pairs, [args.policy], variants))
    write_json(args.output, {"machine": f"{describe()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
                             "models": list(args.model_dirs), "policy": args.policy, "folds": args.folds,
                             "seed": args.seed, "repeats": args.repeats, "results": results, "pairs": pairs})
    stem = os.path.splitext(args.output)[0]
    plot(results, args.policy, stem + ".png")
    plot_pairs(pairs, [args.policy], variants, stem + "_pairs.png")
    print(f"figures written to {args.output}, {stem}.png and {stem}_pairs.png")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.ensembles")
