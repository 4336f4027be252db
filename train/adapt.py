"""adapt.py: adapt a trained model to a new site's X-rays, into a new model dir that exports and deploys
like any other.

    python3 adapt.py --model-dir models/pneumonia --output models/pneumonia-siteA SITE_IMAGES
    python3 adapt.py --model-dir models/pneumonia --output models/pneumonia-siteA SITE_IMAGES \\
        --labelled SITE_LABELLED --min-sensitivity 0.9

From a few hundred **unlabelled** images of the site (folders, files or globs; train/site_shift.py):
1. the source model's posteriors on them, calibrated to the source's class shares on its own
   validation images, give the site's share of pneumonia by EM;
2. every batch-norm layer's statistics are measured again on the site's images, drawn so that they
   have the source's class shares: the network's features are normalised as the site's machine
   makes them, and not as its patient mix does. The shipped threshold is kept: with the class mix
   held at the source's, the scores keep the scale the threshold was chosen on. Re-estimating the
   statistics on the site's own mix moves them with the class shares too, and the shipped threshold
   then calls far more normals "pneumonia" (measured in README's site adaptation section).

With a few **labelled** images of the site (``--labelled DIR``, one sub-folder per class), the
temperature is fitted again on them and the threshold is re-chosen as the highest one at which the
sensitivity is at least ``--min-sensitivity`` with 95% confidence (a one-sided Clopper-Pearson
bound); the threshold depends on the positives alone, so the specificity measured on the labelled
normals is an honest estimate, printed with its interval.

The new model dir holds model_best.pth.tar (with the adaptation's record), labels.txt, the input
gate (its statistics are the source's), site_manifest.csv (every site image's sha256) and a model card
naming the site's images, their manifest's sha256 and the source model's sha256.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import atomic_path, check_writable, sha256_file
from cxr_jetson.core.image_files import expand_input
from cxr_jetson.core.labels import write_labels
from cxr_jetson.core.metric_registry import headline_summary
from cxr_jetson.core.names import BEST_CHECKPOINT, LABELS_FILE
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec, save_atomic
from cxr_jetson.networks.input_gate import GATE_FILE
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.calibration import (
    fit_bias_corrected_temperature,
    fit_temperature,
    fold_temperature,
    rescale,
    usable_temperature,
)
from cxr_jetson.train.dataset import CachedSplit, decode_images, load_split
from cxr_jetson.train.hardware import select_device
from cxr_jetson.train.intervals import patient_groups, proportion_interval
from cxr_jetson.train.loop import predict_probabilities
from cxr_jetson.train.metrics import evaluate_probabilities
from cxr_jetson.train.model_card import write_model_card
from cxr_jetson.train.site_shift import (
    SiteDataError,
    batch_norm_layers,
    class_balance_weights,
    em_prior,
    guaranteed_threshold,
    reestimate_batch_norm,
)

# Fewer images than this give batch-norm statistics and a prior estimate that mean little.
MIN_SITE_IMAGES = 100
# An estimated share of either class below this: the site's images look like one class, and drawing them
# to the source's class shares would repeat a handful of images.
MIN_CLASS_SHARE = 0.02
MIN_LABELLED_PER_CLASS = 10
SITE_MANIFEST = "site_manifest.csv"


@dataclass(frozen=True)
class AdaptOptions:
    model_dir: str
    output: str
    site: Sequence[str]
    labelled: Optional[str] = None
    min_sensitivity: float = 0.9
    min_images: int = MIN_SITE_IMAGES
    source_data: Optional[str] = None    # default: the data set the model was trained on (its checkpoint says)
    overwrite: bool = False
    batch_size: int = 32
    workers: int = 2
    device: str = "auto"
    seed: int = 0


@dataclass
class _Site:
    images: np.ndarray   # uint8 N x R x R, as the model sees them
    paths: List[str]
    failures: List[str]


def _check_output(options: AdaptOptions) -> None:
    if os.path.realpath(options.output) == os.path.realpath(options.model_dir):
        raise ToolkitError("--output must be a new folder: the source model is never overwritten by its adaptation")
    check_writable(options.output, "--output", is_folder=True)
    if os.path.isfile(os.path.join(options.output, BEST_CHECKPOINT)) and not options.overwrite:
        raise ToolkitError(f"{options.output} already holds a model ({BEST_CHECKPOINT}): pick another --output or "
                           "replace it with --overwrite")


def _site_images(inputs: Sequence[str], spec: PreprocessSpec, workers: int, minimum: int) -> _Site:
    paths: List[str] = []
    for spec_or_folder in inputs:
        found, _ = expand_input(spec_or_folder)
        paths += [image.path for image in found]
    paths = list(dict.fromkeys(paths))  # a file named twice counts once
    images, keep = decode_images(paths, spec, workers, "decoding the site's images")
    site = _Site(images[keep], [p for p, ok in zip(paths, keep) if ok], [p for p, ok in zip(paths, keep) if not ok])
    for path in site.failures:
        print(f"   left out unreadable image: {path}")
    if len(site.paths) < minimum:
        raise SiteDataError(f"{len(site.paths)} readable site image(s); adaptation needs at least {minimum} "
                            "(a few hundred is better) to measure the site's statistics")
    return site


def _unlabelled_split(name: str, images: np.ndarray) -> CachedSplit:
    return CachedSplit(name, torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long), [""] * len(images))


def _source_validation(checkpoint: Dict[str, Any], options: AdaptOptions, spec: PreprocessSpec) -> CachedSplit:
    data = options.source_data or (checkpoint.get("data") or {}).get("path") or (checkpoint.get("args") or {}).get(
        "data")
    if not data or not os.path.isdir(os.path.join(data, "val")):
        raise ToolkitError(f"the source model's validation images ({data or 'not recorded'}/val) are not here: they "
                           "calibrate the class prior; pass the data set the model was trained on with --source-data")
    return load_split(data, "val", list(checkpoint["classes"]), spec, options.workers)


def _write_manifest(path: str, paths: List[str]) -> str:
    """Every site image the adaptation read, with its sha256; returns the manifest's own sha256."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256"])
        writer.writerows((p, sha256_file(p)) for p in paths)
    return sha256_file(path)


def _batch_norm_shift(before: torch.nn.Module, after: torch.nn.Module) -> float:
    """Mean over layers and channels of |site mean - source mean| / source standard deviation."""
    shifts = [((new.running_mean - old.running_mean).abs() / (old.running_var + old.eps).sqrt()).mean().item()
              for old, new in zip(batch_norm_layers(before), batch_norm_layers(after))]
    return float(np.mean(shifts))


def _labelled_refit(model: torch.nn.Module, checkpoint: Dict[str, Any], options: AdaptOptions, spec: PreprocessSpec,
                    device: torch.device, positive: int) -> Tuple[float, Dict[str, Any]]:
    """Temperature refitted and folded into ``model``; the guaranteed threshold and the record."""
    classes = list(checkpoint["classes"])
    folder = os.path.normpath(options.labelled)
    try:  # laid out as a training split: one sub-folder per class
        split = load_split(os.path.dirname(folder), os.path.basename(folder), classes, spec, options.workers)
    except ToolkitError as err:
        raise SiteDataError(f"--labelled {options.labelled}: {err} (one sub-folder per class: {', '.join(classes)})") \
            from None
    labels, paths = split.labels.numpy(), split.paths
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < MIN_LABELLED_PER_CLASS:
        raise SiteDataError(f"--labelled has {dict(zip(classes, counts.tolist()))} readable images; every class needs "
                            f"at least {MIN_LABELLED_PER_CLASS}")
    probabilities = predict_probabilities(model, split, spec, device, options.batch_size, False, "labelled")
    fitted = fit_temperature(probabilities, labels)
    temperature = usable_temperature(fitted)
    fold_temperature(model, temperature)
    calibrated = rescale(probabilities, temperature)
    threshold, bound, caught = guaranteed_threshold(calibrated[labels == positive, positive], options.min_sensitivity)
    metrics = evaluate_probabilities(calibrated, labels, positive, threshold, intervals=True,
                                     groups=patient_groups(paths))
    record = {"images": int(len(labels)), "per_class": dict(zip(classes, counts.tolist())),
              "temperature": temperature, "temperature_fitted": fitted, "min_sensitivity": options.min_sensitivity,
              "sensitivity_lower_bound": bound, "positives_caught": caught, "metrics": metrics,
              "specificity_interval": list(proportion_interval(metrics["tn"], metrics["tn"] + metrics["fp"]))}
    print(f"=> labelled site images ({record['per_class']}): temperature {temperature:.3f}; threshold {threshold:.4f}: "
          f"sensitivity at least {bound:.3f} with 95% confidence ({caught} of {counts[positive]} positives caught); "
          f"specificity {metrics['specificity']:.3f} [{metrics['specificity_low']:.3f}, "
          f"{metrics['specificity_high']:.3f}]")
    return threshold, record


@dataclass
class SiteAdaptation:
    model: torch.nn.Module     # the adapted copy of the source model
    source_prior: np.ndarray   # class shares of the source's validation
    site_prior: np.ndarray     # estimated by EM
    temperature: float         # the source's calibration to its class shares (for EM)
    bias: np.ndarray
    layers: int                # batch-norm layers re-estimated
    shift: float               # how far their means moved, in source standard deviations
    before: np.ndarray         # the site's probabilities under the source model
    after: np.ndarray          # and under the adapted one


def adapt_to_site(source: torch.nn.Module, validation: CachedSplit, site_images: np.ndarray, spec: PreprocessSpec,
                  device: torch.device, batch_size: int, classes: Sequence[str], seed: int = 0,
                  val_probabilities: Optional[np.ndarray] = None) -> SiteAdaptation:
    """The source model adapted to ``site_images`` (uint8 ``N x R x R`` as the model sees them, unlabelled): the
    site's class prior by EM from posteriors calibrated on the source's ``validation`` (its probabilities under
    the source model when already computed), then batch-norm statistics on the site's images drawn to the
    source's class shares."""
    val_targets = validation.labels.numpy()
    if val_probabilities is None:
        val_probabilities = predict_probabilities(source, validation, spec, device, batch_size, False, "source val")
    temperature, bias = fit_bias_corrected_temperature(val_probabilities, val_targets)
    source_prior = np.bincount(val_targets, minlength=val_probabilities.shape[1]) / len(val_targets)
    site_split = _unlabelled_split("site", site_images)
    before = predict_probabilities(source, site_split, spec, device, batch_size, False, "site (source model)")
    site_prior, responsibilities = em_prior(rescale(before, temperature, bias), source_prior)
    if site_prior.min() < MIN_CLASS_SHARE:
        raise SiteDataError(f"the site's images look like one class ({classes[int(site_prior.argmax())]}: estimated "
                            f"share {site_prior.max():.3f}); adaptation needs images of both classes")
    adapted = copy.deepcopy(source)
    weights = class_balance_weights(responsibilities, site_prior, source_prior)
    layers = reestimate_batch_norm(adapted, site_images, spec, device, batch_size, weights, seed)
    after = predict_probabilities(adapted, site_split, spec, device, batch_size, False, "site (adapted)")
    return SiteAdaptation(adapted, source_prior, site_prior, temperature, bias, layers,
                          _batch_norm_shift(source, adapted), before, after)


def adapt(options: AdaptOptions) -> str:
    """Write the adapted model dir; returns its model_best path."""
    source_path = os.path.join(options.model_dir, BEST_CHECKPOINT)
    checkpoint = load_checkpoint(source_path)
    classes = list(checkpoint.get("classes") or [])
    positive = positive_index(classes, checkpoint.get("positive_class"))
    if positive is None or len(classes) != 2 or checkpoint.get("threshold") is None:
        raise ToolkitError(f"{source_path}: site adaptation needs a two-class model with a positive class and a "
                           "threshold")
    _check_output(options)
    device, spec = select_device(options.device), preprocess_spec(checkpoint)
    site = _site_images(options.site, spec, options.workers, options.min_images)
    source = model_from_checkpoint(checkpoint).to(device).eval()
    validation = _source_validation(checkpoint, options, spec)

    adaptation = adapt_to_site(source, validation, site.images, spec, device, options.batch_size, classes,
                               options.seed)
    print(f"=> the site's estimated share of {classes[positive]}: {adaptation.site_prior[positive]:.3f} (source "
          f"validation {adaptation.source_prior[positive]:.3f})")
    threshold = float(checkpoint["threshold"])
    before, after = adaptation.before[:, positive], adaptation.after[:, positive]
    changed = int(np.sum((before >= threshold) != (after >= threshold)))
    print(f"=> {adaptation.layers} batch-norm layers re-estimated on {len(site.paths)} site images (mean shift "
          f"{adaptation.shift:.3f} source standard deviations); {changed} of {len(site.paths)} site decisions changed "
          f"at the shipped threshold {threshold:.4f}")
    if changed == 0:
        print("=> the adaptation changed no decision on these images: the site's statistics are close to the source's")
    adapted = adaptation.model

    # With labelled site images: the temperature, and a threshold with a sensitivity guarantee.
    labelled = None
    if options.labelled:
        threshold, labelled = _labelled_refit(adapted, checkpoint, options, spec, device, positive)

    os.makedirs(options.output, exist_ok=True)
    manifest_sha256 = _write_manifest(os.path.join(options.output, SITE_MANIFEST), site.paths)
    record = {
        "source": {"model_dir": os.path.abspath(options.model_dir), "checkpoint_sha256": sha256_file(source_path),
                   "threshold": checkpoint["threshold"]},
        "site": {"inputs": [os.path.abspath(p) for p in options.site], "images": len(site.paths),
                 "unreadable": len(site.failures), "manifest": SITE_MANIFEST, "manifest_sha256": manifest_sha256},
        "prior": {"source": float(adaptation.source_prior[positive]),
                  "site_estimate": float(adaptation.site_prior[positive]),
                  "calibration": {"temperature": adaptation.temperature, "bias": adaptation.bias.tolist()}},
        "batch_norm": {"layers": adaptation.layers, "class_balanced": True,
                       "mean_shift_in_source_std": adaptation.shift},
        "decisions_changed_on_site": changed, "labelled": labelled,
    }
    adapted_checkpoint = dict(checkpoint, state_dict=adapted.state_dict(), threshold=threshold, adaptation=record)
    best = os.path.join(options.output, BEST_CHECKPOINT)
    save_atomic(adapted_checkpoint, best)
    write_labels(os.path.join(options.output, LABELS_FILE), classes)
    gate = os.path.join(options.model_dir, GATE_FILE)
    if os.path.isfile(gate):
        shutil.copyfile(gate, os.path.join(options.output, GATE_FILE))
    print(f"=> adapted model: {best}; model card: {write_model_card(options.output)}")
    if labelled:
        print(f"=> on the labelled site images: {headline_summary(labelled['metrics'])}")
    print(f"=> export it as any other: python3 onnx_export.py --model-dir {options.output}")
    return best


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Adapt a trained model to a new site's images (batch-norm "
                                     "statistics, class prior; with labelled images the temperature and a threshold "
                                     "with a sensitivity guarantee) into a new model dir.")
    parser.add_argument("site", nargs="+", help="the site's unlabelled images: folders, files or globs")
    parser.add_argument("--model-dir", required=True, help="the trained model's folder (model_best.pth.tar)")
    parser.add_argument("--output", required=True, help="the adapted model's new folder")
    parser.add_argument("--labelled", help="labelled site images, one sub-folder per class (as the training data)")
    parser.add_argument("--min-sensitivity", type=float, default=0.9,
                        help="with --labelled: the sensitivity the threshold must guarantee with 95%% confidence "
                        "(default 0.9)")
    parser.add_argument("--min-images", type=int, default=MIN_SITE_IMAGES,
                        help=f"refuse fewer readable site images than this (default {MIN_SITE_IMAGES})")
    parser.add_argument("--source-data", help="the data set the model was trained on (default: as its checkpoint "
                        "records)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--workers", "-j", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0, help="the draw of site images for the statistics")
    return parser


def main(args: argparse.Namespace) -> int:
    if not 0.0 < args.min_sensitivity < 1.0:
        raise ToolkitError("--min-sensitivity must lie between 0 and 1")
    if args.min_images < 2:
        raise ToolkitError("--min-images must be at least 2")
    adapt(AdaptOptions(model_dir=args.model_dir, output=args.output, site=args.site, labelled=args.labelled,
                       min_sensitivity=args.min_sensitivity, min_images=args.min_images, source_data=args.source_data, overwrite=args.overwrite,
                       batch_size=args.batch_size, workers=args.workers, device=args.device, seed=args.seed))
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "adapt.py")
