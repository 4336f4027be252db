"""A model card beside each trained model, rendered from its checkpoint so it can be regenerated.

    python3 -m cxr_jetson.train.model_card models/pneumonia      # writes models/pneumonia/MODEL_CARD.md

It states what the model is, what it was trained on (the data manifest's sha256 pins the split),
the recipe, the validation figures at the shipped threshold, and what it must not be used for.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.files import atomic_path, sha256_file
from cxr_jetson.core.metric_registry import METRICS, SHIFTED_PREFIX, format_value, format_with_interval
from cxr_jetson.core.names import BEST_CHECKPOINT, MODEL_CARD
from cxr_jetson.data.synthetic import NOTICE_FILE
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.input_gate import GATE_FILE, GateStatistics
from cxr_jetson.networks.model import model_from_checkpoint

_RECIPE_KEYS = ("arch", "pretrained", "weights", "equalize", "augment", "epochs", "batch_size", "optimizer", "lr",
                "warmup_epochs", "momentum", "weight_decay", "scheduler", "class_weights", "label_smoothing", "mixup",
                "head_dropout", "freeze_backbone", "unfreeze_at", "backbone_lr_scale", "train_last", "early_stop",
                "select_metric", "threshold_policy", "robust_threshold", "recalibrate_bn", "amp", "seed")

def _is_synthetic(data: str) -> bool:
    return bool(data) and os.path.isfile(os.path.join(data, NOTICE_FILE))


def _model_section(checkpoint: Dict[str, Any], model_dir: str) -> List[str]:
    args = checkpoint.get("args") or {}
    spec = preprocess_spec(checkpoint)
    classes: List[str] = list(checkpoint.get("classes") or [])
    positive = checkpoint.get("positive_class")
    parameters = sum(p.numel() for p in model_from_checkpoint(checkpoint).parameters())
    onnx = os.path.join(model_dir, f"{checkpoint['arch']}.onnx")
    lines = [
        "## Model",
        f"- Architecture: `{checkpoint['arch']}`, {parameters:,} parameters",
        f"- Input: {spec.resolution} x {spec.resolution}, the whole frame stretched, grey replicated to RGB, "
        f"ImageNet mean/std (`core/preprocess.py`, spec version {spec.version})",
        f"- Output: softmax probabilities over {', '.join(classes)}",
        f"- Decision: {positive} when its probability is at least {format_value(checkpoint.get('threshold'))} "
        f"(policy `{checkpoint.get('threshold_policy')}`, chosen on validation data)" if positive else
        "- Decision: the most probable class",
        f"- Checkpoint: epoch {checkpoint.get('epoch')} of {args.get('epochs', '?')}, selected by "
        f"{(checkpoint.get('best') or {}).get('metric', '?')}",
    ]
    if os.path.isfile(onnx):
        lines.append(f"- ONNX: `{os.path.basename(onnx)}`, sha256 `{sha256_file(onnx)}`")
    return lines


def _data_section(checkpoint: Dict[str, Any]) -> List[str]:
    args, data = checkpoint.get("args") or {}, checkpoint.get("data") or {}
    lines = [
        "## Data",
        f"- Data set: `{data.get('path', args.get('data', '?'))}`, {data.get('train_images', '?')} training and "
        f"{data.get('val_images', '?')} validation images",
        f"- Split manifest sha256: `{data.get('manifest_sha256') or 'no manifest.csv (not made by data/prepare.py)'}`",
        "- Validation is a patient-grouped split of the training data (data/prepare.py); no test image "
        "influenced training, model selection or the threshold.",
    ]
    if _is_synthetic(data.get("path", "")):
        lines.append("- **Trained on SYNTHETIC images** (data/synthetic.py): a pipeline demonstration, not a "
                     "model of real X-rays.")
    return lines


def _figures_section(checkpoint: Dict[str, Any]) -> List[str]:
    """Every registered metric at the shipped threshold, on validation and on its shifted copy."""
    metrics = checkpoint.get("val_metrics") or {}
    lines = [f"## Validation figures (at threshold {format_value(checkpoint.get('threshold'))})", "",
             "Values with their 95% confidence interval in brackets (exact binomial for proportions, a bootstrap "
             "over patients for the AUC; train/intervals.py).", "",
             "| metric | value [95% CI] |", "|---|---|"]
    lines += [f"| {m.label} | {format_with_interval(metrics, m.key)} |" for m in METRICS if m.key in metrics]
    if {"tp", "fp", "tn", "fn"} <= set(metrics):
        lines.append(f"| confusion (TP, FP, TN, FN) | {metrics['tp']}, {metrics['fp']}, {metrics['tn']}, "
                     f"{metrics['fn']} |")
    shifted = {key[len(SHIFTED_PREFIX):]: value for key, value in metrics.items() if key.startswith(SHIFTED_PREFIX)}
    lines += [f"| {m.label} on the shifted copy of validation (train/shift.py) | {format_with_interval(shifted, m.key)} |"
              for m in METRICS if m.key in shifted]
    return lines


_LIMITS = [
    "## Intended use and limits",
    "- Intended: developing and benchmarking screening pipelines on frontal chest X-rays like the training "
    "data, with a clinician making every decision.",
    "- The Kermany et al. data (the usual training set) are pediatric (ages 1-5) anterior-posterior X-rays "
    "from one hospital; adults, lateral views, other hospitals and other devices are out of distribution.",
    "- Validation figures are in-distribution. On images from other sites, specificity in particular "
    "drops; measure on your own data before relying on any figure here.",
    "- The threshold trades sensitivity for specificity; it was chosen on validation data and may need "
    "re-choosing (on held-out data from the target site) before use there.",
]


def _gate_section(model_dir: str) -> List[str]:
    """The input gate: what the model refuses to answer for, the population it was trained on, REFER."""
    path = os.path.join(model_dir, GATE_FILE)
    if not os.path.isfile(path):
        return ["## Input gate", "", "None fitted (too small a data set, or `--no-input-gate`): the model answers "
                "every input, including inputs that are not chest X-rays."]
    policy = GateStatistics.load(path).policy
    low, high = policy.age_range_years or (None, None)
    return ["## Input gate", "",
            f"Fitted by `train/input_gate.py` on {policy.fitted.get('train_images', '?')} training images; built into "
            "the ONNX as `gate_0` with its policy in the metadata (`cxr.gate`). `classify.py` answers **NOT ASSESSED** "
            "with the reason for: frames under half the network resolution, colour images, nearly constant frames, "
            "inverted or rotated films, inputs whose features are unlike the training images' (Mahalanobis score "
            f"above {policy.mahalanobis:.3f}); **REFER** when the decision-scale probability lies between "
            f"{policy.refer_band[0]:.1%} and {policy.refer_band[1]:.1%}. `--no-gate` answers everything.",
            "",
            f"Population: paediatric patients aged {low:g}-{high:g} years (a DICOM outside it is flagged); DICOM "
            "headers of another modality, body part, a lateral view or colour pixels are refused (core/dicom_gate.py)."
            if low is not None else "Population: not recorded.", ""] + _held_out_table(policy.fitted.get("held_out", {}))


def _held_out_table(report: Dict[str, Dict[str, Any]]) -> List[str]:
    """The gate on the validation patients none of its thresholds was chosen on."""
    lines = ["| held-out set | images | refused | decided (not REFER) | sensitivity decided (all) | "
             "specificity decided (all) |", "|---|---|---|---|---|---|"]
    for name, row in report.items():
        def pair(metric: str) -> str:
            decided, every = row.get(f"{metric}_decided"), row.get(f"{metric}_assessed")
            return "-" if decided is None or every is None else f"{decided:.3f} ({every:.3f})"
        coverage = f"{row['coverage']:.1%}" if "coverage" in row else "-"
        lines.append(f"| {name} | {row['images']} | {row['refused']:.1%} | {coverage} | {pair('sensitivity')} | "
                     f"{pair('specificity')} |")
    return lines if report else []


def _adaptation_section(checkpoint: Dict[str, Any]) -> List[str]:
    """Where an adapted model came from and what the site's images changed (train/adapt.py)."""
    record = checkpoint.get("adaptation")
    if not record:
        return []
    source, site, prior = record["source"], record["site"], record["prior"]
    lines = ["## Site adaptation (adapt.py)",
             f"- Source model: `{source['model_dir']}`, {BEST_CHECKPOINT} sha256 `{source['checkpoint_sha256']}`, "
             f"threshold {format_value(source['threshold'])}",
             f"- Site images: {site['images']} unlabelled ({site['unreadable']} unreadable left out), listed in "
             f"`{site['manifest']}` (sha256 `{site['manifest_sha256']}`)",
             f"- Estimated share of the positive class at the site (EM): {prior['site_estimate']:.3f}; source "
             f"validation {prior['source']:.3f}",
             f"- Batch-norm statistics of {record['batch_norm']['layers']} layers measured again on the site's images, "
             f"drawn to the source's class shares (mean shift {record['batch_norm']['mean_shift_in_source_std']:.3f} "
             f"source standard deviations); {record['decisions_changed_on_site']} site decisions changed",
             "- The validation figures above and the input gate's statistics are the source model's."]
    labelled = record.get("labelled")
    if labelled:
        metrics = labelled["metrics"]
        lines += [f"- Labelled site images {labelled['per_class']}: temperature {labelled['temperature']:.3f}; the "
                  f"threshold guarantees a sensitivity of at least {labelled['sensitivity_lower_bound']:.3f} with 95% "
                  f"confidence (one-sided Clopper-Pearson; {labelled['positives_caught']} positives caught); "
                  f"specificity there {format_with_interval(metrics, 'specificity')}"]
    else:
        lines.append("- No labelled site images: the shipped threshold is kept. Check it on labelled images from the "
                     "site (`adapt.py --labelled`) before relying on it.")
    return lines


def render(checkpoint: Dict[str, Any], model_dir: str) -> str:
    args = checkpoint.get("args") or {}
    recipe = ["## Recipe", "", "| setting | value |", "|---|---|"]
    recipe += [f"| {key} | `{args[key]}` |" for key in _RECIPE_KEYS if key in args]
    header = [
        f"# Model card: {os.path.basename(os.path.abspath(model_dir))}",
        "",
        f"Generated from `{BEST_CHECKPOINT}` by `python3 -m cxr_jetson.train.model_card {model_dir}`; regenerate it "
        "after retraining.",
        "",
        "> **Not a diagnostic device.** This model is a research and engineering artefact for chest X-ray "
        "screening pipelines. It must not be used to diagnose, treat or triage patients.",
    ]
    sections = [header, _model_section(checkpoint, model_dir), _data_section(checkpoint), recipe,
                _figures_section(checkpoint), _adaptation_section(checkpoint), _gate_section(model_dir), _LIMITS]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_model_card(model_dir: str) -> str:
    checkpoint = load_checkpoint(os.path.join(model_dir, BEST_CHECKPOINT))
    path = os.path.join(model_dir, MODEL_CARD)
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(render(checkpoint, model_dir))
    return path


def main(args: argparse.Namespace) -> int:
    print(f"=> model card written to {write_model_card(args.model_dir)}")
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(description="Write MODEL_CARD.md from a model dir's model_best.pth.tar.")
    parser.add_argument("model_dir", help="folder holding model_best.pth.tar")
    run_cli(lambda: main(parser.parse_args()), "train.model_card")


if __name__ == "__main__":
    cli()
