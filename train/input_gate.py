"""Fit a model's input gate (core/input_gate.py, networks/input_gate.py) on its own data, and write it
beside the checkpoint as ``input_gate.npz``; onnx_export.py then builds it into the ONNX.

    python3 -m cxr_jetson.train.input_gate --model-dir models/pneumonia data/pneumonia

train.py runs this at the end of training. What is fitted where, so that the figures it prints are honest:
- the statistics (class means and shared covariance of the pooled features, the mean layout) on the
  training images, as the model saw them (no augmentation);
- the thresholds on one half of the validation patients and its shifted copies (train/shift.py): the
  Mahalanobis threshold so that at most ``--target-refusals / 2`` of each set is refused, the layout
  margin so that at most a fifth of that is; the REFER band on the same half (validation plus its
  ``mixed`` copy): the narrowest band around the threshold that refers half of the mistakes;
- the false refusals, coverage and the accuracy among decided cases reported on the other half.
"""
from __future__ import annotations

import argparse
import os
import zlib
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.decision import positive_index
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import check_writable
from cxr_jetson.core.input_gate import GatePolicy, in_refer_band, layout_margin, parse_age_range, score_refusal
from cxr_jetson.core.model_files import in_model_dir
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.core.preprocess import equalize, normalize
from cxr_jetson.data.patients import patient_id
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.deployable import ClassifierWithCam, deployment
from cxr_jetson.networks.input_gate import GATE_FILE, GateStatistics, layout_grid, standardised_layout
from cxr_jetson.train.dataset import CachedSplit, load_split
from cxr_jetson.train.model_card import write_model_card
from cxr_jetson.train.shift import PROXIES, TRAINING_PROXY, degrade

# Fewer images than these give thresholds that mean nothing: no gate is fitted (the model answers everything).
MIN_TRAIN_IMAGES, MIN_TUNING_IMAGES = 200, 100
# Each check's share of the false-refusal budget: the feature distance takes most, the layout a fifth.
_MAHALANOBIS_SHARE, _LAYOUT_SHARE = 0.5, 0.1


class GateDataError(ToolkitError):
    """A data set too small to fit the gate on."""


@dataclass
class Pass:
    """The training images through the deployed network: what the gate's statistics are fitted on."""
    pooled: np.ndarray       # N x D
    layouts: np.ndarray      # N x G*G
    labels: np.ndarray       # N


def _run(checkpoint: Dict, images: np.ndarray, labels: np.ndarray, batch_size: int = 32) -> Pass:
    """Pooled features and layouts of uint8 R x R raw (unequalised) images."""
    deployed = deployment(checkpoint, cam=True)
    network, spec = deployed.network, deployed.info.spec
    if not isinstance(network.classifier, ClassifierWithCam):
        raise ToolkitError(f"the input gate needs a single-label ResNet or compact CNN, not {checkpoint.get('arch')}")
    # Every equalisation, the graph's included, done by OpenCV (the graph's gives the same lookup table:
    # tests/test_jetson_workflow.py): several times faster on a CPU over thousands of training images.
    trained_on = preprocess_spec(checkpoint)
    grid = layout_grid(spec.resolution)
    pooled, layouts = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = np.stack([equalize(image, trained_on) for image in images[start:start + batch_size]])
            seen = torch.from_numpy(normalize(chunk, spec))
            pooled.append(network.classifier.parts(seen)[2].numpy())
            layouts.append(standardised_layout(seen, grid).numpy())
    return Pass(np.concatenate(pooled), np.concatenate(layouts), labels)


def _statistics(train: Pass, num_classes: int, grid: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class means, the whitening factor of the shared (Ledoit-Wolf shrunk) covariance, the mean layout."""
    from sklearn.covariance import LedoitWolf
    present = [c for c in range(num_classes) if (train.labels == c).any()]
    means = np.stack([train.pooled[train.labels == c].mean(0) if c in present else np.zeros(train.pooled.shape[1])
                      for c in range(num_classes)])
    centred = train.pooled - means[train.labels]
    covariance = LedoitWolf().fit(centred).covariance_
    whitening = np.linalg.cholesky(np.linalg.inv(covariance))  # L L^T = precision: |(f - m) L|^2 = Mahalanobis
    layout = train.layouts.mean(0).reshape(grid, grid)
    return means, whitening, layout / max(float(np.linalg.norm(layout)), 1e-12)


def _scores(deployed, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """output_0 and gate_0 for uint8 raw images, computed by the very network the ONNX gets."""
    spec = deployed.info.spec  # what the host still does: CLAHE for such a model; "hist" runs in the graph
    with torch.inference_mode():
        parts = [deployed.network(torch.from_numpy(normalize(np.stack([equalize(image, spec) for image in
                                                                        images[i:i + 32]]), spec)))
                 for i in range(0, len(images), 32)]
    return np.concatenate([p[0].numpy() for p in parts]), np.concatenate([p[-1].numpy() for p in parts])


def tuning_half(paths: List[str]) -> np.ndarray:
    """True for the validation patients the thresholds are chosen on (a stable hash of the patient)."""
    return np.array([zlib.crc32((patient_id(os.path.basename(p)) or os.path.basename(p)).encode()) % 2 == 0
                     for p in paths])


def _thresholds(sets: Dict[str, np.ndarray], target: float) -> Tuple[float, float]:
    """Mahalanobis threshold and layout margin: each set refused at most its share of ``target``."""
    mahalanobis = max(float(np.quantile(s[:, 0], 1 - target * _MAHALANOBIS_SHARE)) for s in sets.values())
    margins = {name: np.array([layout_margin(row)[0] for row in s]) for name, s in sets.items()}
    margin = min(float(np.quantile(m, target * _LAYOUT_SHARE)) for m in margins.values())
    return mahalanobis, margin


def refer_band(decision: np.ndarray, labels: np.ndarray, positive: int, error_fraction: float = 0.5,
               min_coverage: float = 0.8) -> Tuple[float, float]:
    """The narrowest band (symmetric in logit around 0.5) that refers ``error_fraction`` of the mistakes
    at the threshold, without deciding fewer than ``min_coverage`` of the cases."""
    logits = np.log(np.clip(decision, 1e-7, 1)) - np.log(np.clip(1 - decision, 1e-7, 1))
    wrong = (decision >= 0.5) != (labels == positive)
    if not wrong.any():
        return 0.5, 0.5
    distances = np.sort(np.abs(logits[wrong]))
    width = float(distances[int(np.ceil(error_fraction * len(distances))) - 1]) + 1e-6
    width = min(width, float(np.quantile(np.abs(logits), 1 - min_coverage)))
    return float(1 / (1 + np.exp(width))), float(1 / (1 + np.exp(-width)))


def _load_raw(data_dir: str, split: str, classes: List[str], spec, workers: int) -> CachedSplit:
    return load_split(data_dir, split, classes, replace(spec, equalize="none"), workers)


def fit_gate(checkpoint: Dict, data_dir: str, workers: int = 2, target_refusals: float = 0.01,
             age_range: Tuple[float, float] = (1, 5),
             minimum: Tuple[int, int] = (MIN_TRAIN_IMAGES, MIN_TUNING_IMAGES)) -> Tuple[GateStatistics, Dict]:
    """Fit the gate of ``checkpoint`` on ``data_dir``'s train and val splits (see the module docstring)."""
    spec, classes = preprocess_spec(checkpoint), list(checkpoint["classes"])
    grid = layout_grid(spec.resolution)
    if grid == 0:
        raise ToolkitError(f"the input gate's layout check needs a resolution divisible by 8..16, not {spec.resolution}")
    train_split = _load_raw(data_dir, "train", classes, spec, workers)
    val = _load_raw(data_dir, "val", classes, spec, workers)
    tuning = tuning_half(val.paths)
    if len(train_split) < minimum[0] or tuning.sum() < minimum[1] or (~tuning).sum() == 0:
        raise GateDataError(f"too few images to fit the input gate: {len(train_split)} train and {len(val)} "
                            f"validation images, {minimum[0]} and about {2 * minimum[1]} needed")
    tqdm.write(f"=> input gate: features of {len(train_split)} train images")
    train_pass = _run(checkpoint, train_split.images.numpy(), train_split.labels.numpy())
    means, whitening, layout = _statistics(train_pass, len(classes), grid)
    sets = {"val": val.images.numpy()}
    sets.update({f"val~{proxy}": degrade(sets["val"], proxy, seed=offset) for offset, proxy in enumerate(PROXIES)})
    provisional = GateStatistics(means, whitening, layout, GatePolicy(mahalanobis=np.inf, layout_margin=-np.inf))
    tqdm.write(f"=> input gate: scores of validation and its {len(PROXIES)} shifted copies")
    gated = deployment(checkpoint, cam=False, gate=provisional)
    passes = {name: _scores(gated, images) for name, images in sets.items()}
    mahalanobis, margin = _thresholds({n: gate[tuning] for n, (_, gate) in passes.items()}, target_refusals)
    positive = positive_index(classes, checkpoint.get("positive_class"))
    labels = val.labels.numpy()
    band = (0.5, 0.5)
    if positive is not None:
        decision = np.concatenate([passes[n][0][tuning, positive] for n in ("val", f"val~{TRAINING_PROXY}")])
        band = refer_band(decision, np.concatenate([labels[tuning]] * 2), positive)
    policy = GatePolicy(mahalanobis=mahalanobis, layout_margin=margin, refer_band=band,
                        age_range_years=tuple(age_range),
                        fitted={"train_images": len(train_split), "target_refusals": target_refusals,
                                "tuning": "half of the validation patients and its shifted copies"})
    report = {name: held_out_report(output[~tuning], gate[~tuning], labels[~tuning], positive, policy)
              for name, (output, gate) in passes.items()}
    policy.fitted["held_out"] = report
    return GateStatistics(means, whitening, layout, policy), report


def held_out_report(probabilities: np.ndarray, scores: np.ndarray, labels: np.ndarray, positive: Optional[int],
                    policy: GatePolicy) -> Dict[str, float]:
    """On in-scope images: the share refused, the share of the rest decided (not REFER), and sensitivity and
    specificity among the decided cases next to those of every assessed case (decision-scale output_0)."""
    refused = np.array([score_refusal(row, policy) is not None for row in scores], bool)
    report = {"images": int(len(labels)), "refused": float(refused.mean()) if len(refused) else 0.0}
    if positive is None or refused.all():
        return report
    decision = probabilities[~refused, positive]
    sick, called = labels[~refused] == positive, decision >= 0.5
    decided = ~np.array([in_refer_band(float(d), policy) for d in decision], bool)
    report["coverage"] = float(decided.mean())
    for name, chosen in (("assessed", np.ones_like(decided)), ("decided", decided)):
        # None (JSON null) where a class has no case: the record travels as JSON in the ONNX
        report[f"sensitivity_{name}"] = float(called[chosen & sick].mean()) if (chosen & sick).any() else None
        report[f"specificity_{name}"] = float((~called[chosen & ~sick]).mean()) if (chosen & ~sick).any() else None
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fit a model's input gate on its training data (written as "
                                                 f"{GATE_FILE} beside the checkpoint; onnx_export.py builds it in).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", metavar="DIR", help="the data set the model was trained on (train/ and val/)")
    parser.add_argument("--model-dir", default="", help="folder of the checkpoint")
    parser.add_argument("--input", default=BEST_CHECKPOINT, help="checkpoint")
    parser.add_argument("--target-refusals", type=float, default=0.01,
                        help="largest share of in-scope images (validation and each shifted copy) to refuse")
    parser.add_argument("--population-age", default="1-5", metavar="LO-HI",
                        help="patient ages in years the training images span (the Kermany set's: 1-5); a DICOM "
                             "outside them gets a warning")
    parser.add_argument("-j", "--workers", type=int, default=2, help="decoding threads")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {GATE_FILE}")
    return parser


def write_gate(model_dir: str, checkpoint_name: str, data: str, workers: int, target_refusals: float,
               age_range: Tuple[float, float], overwrite: bool,
               minimum: Tuple[int, int] = (MIN_TRAIN_IMAGES, MIN_TUNING_IMAGES)) -> str:
    """Fit the gate of a model folder's checkpoint and write it beside it; print what it refuses in scope."""
    checkpoint_path = in_model_dir(model_dir, checkpoint_name)
    output = os.path.join(os.path.dirname(checkpoint_path), GATE_FILE)
    if os.path.exists(output) and not overwrite:
        raise ToolkitError(f"{output} exists; pass --overwrite to fit the gate again")
    check_writable(output, "the input gate")
    statistics, report = fit_gate(load_checkpoint(checkpoint_path), data, workers, target_refusals, age_range,
                                  minimum)
    statistics.save(output)
    policy = statistics.policy
    print(f"=> input gate written to {output}: Mahalanobis <= {policy.mahalanobis:.3f}, layout margin >= "
          f"{policy.layout_margin:.3f}, REFER band {policy.refer_band[0]:.3f}-{policy.refer_band[1]:.3f} "
          "(decision scale)")
    print("   held-out validation patients (no threshold was chosen on them): refused / decided (not REFER) / "
          "sensitivity and specificity among decided (among all assessed)")
    for name, row in report.items():
        figures = f"{row['refused']:.1%} refused"
        if row.get("sensitivity_decided") is not None and row.get("specificity_decided") is not None:
            figures += (f", {row['coverage']:.1%} decided, sensitivity {row['sensitivity_decided']:.3f} "
                        f"({row['sensitivity_assessed']:.3f}), specificity {row['specificity_decided']:.3f} "
                        f"({row['specificity_assessed']:.3f})")
        print(f"   {name:>16} ({row['images']} images): {figures}")
    return output


def fit_input_gate(config, checkpoint_path: str) -> None:
    """train.py's last step: fit the gate, or say in one line why the model goes without one."""
    try:
        write_gate(os.path.dirname(checkpoint_path), os.path.basename(checkpoint_path), config.data, config.workers,
                   0.01, parse_age_range(config.population_age), overwrite=True)
    except GateDataError as err:
        print(f"=> no input gate: {err}; the model will answer every input")


def main(args: argparse.Namespace) -> int:
    if not 0 < args.target_refusals < 0.5:
        raise ToolkitError(f"--target-refusals {args.target_refusals}: expected a share between 0 and 0.5")
    output = write_gate(args.model_dir, args.input, args.data, args.workers, args.target_refusals,
                        parse_age_range(args.population_age), args.overwrite)
    print(f"=> model card: {write_model_card(os.path.dirname(output))}; export again (onnx_export.py) to build the "
          "gate into the ONNX")
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "input_gate")


if __name__ == "__main__":
    cli()
