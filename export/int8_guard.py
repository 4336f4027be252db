"""The INT8 accuracy guard: before an INT8 ONNX is kept, it must answer like its FP32 original.

Both ONNX files run in ONNX Runtime over the validation images and their five shift proxies
(train/shift.py: the same degraded copies training scores), and per set the guard reports AUC,
sensitivity and specificity at the shipped threshold for both, and how many answers changed: decided
classes flipped and, for a model with an input gate, inputs refused by one and not the other, and cases
moved in or out of the REFER band. The bounds (``GuardBounds``) hold the AUC, the flips and the refusals;
REFER moves are shown, not bounded: the band's two edges are thresholds too, and a case moving across one
is still shown, flagged or not. Outside the bounds on any set, the INT8 model is not written unless forced.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from cxr_jetson.core.agreement import Answers, answers, changed, metric_value, screening
from cxr_jetson.core.decision import DecisionRule
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import GATE_NAME, OUTPUT_NAME
from cxr_jetson.core.preprocess import equalize, normalize
from cxr_jetson.export.verify import onnx_runtime_outputs, onnx_runtime_session
from cxr_jetson.train.dataset import load_split
from cxr_jetson.train.shift import PROXIES, degrade


@dataclass(frozen=True)
class GuardBounds:
    max_auc_drop: float = 0.005  # on every set
    max_changed: float = 0.01    # share of images whose decided class, or whose refusal, differs from FP32's


@dataclass(frozen=True)
class GuardRow:
    name: str
    fp32: Dict[str, Any]
    int8: Dict[str, Any]
    flipped: int
    refusals_changed: Optional[int]   # None: no input gate
    referrals_changed: Optional[int]

    @property
    def auc_drop(self) -> float:
        return float(self.fp32.get("auc", np.nan)) - float(self.int8.get("auc", np.nan))


@dataclass(frozen=True)
class GuardReport:
    rows: List[GuardRow]
    bounds: GuardBounds

    def failures(self) -> List[str]:
        """One phrase per bound a set breaks (a NaN AUC drop, one class only, is not judged)."""
        found = []
        for row in self.rows:
            if row.auc_drop > self.bounds.max_auc_drop:
                found.append(f"{row.name}: AUC down {row.auc_drop:.4f} > {self.bounds.max_auc_drop}")
            for what, count in (("decisions flipped", row.flipped), ("refusals changed", row.refusals_changed)):
                if count and count / row.fp32["n"] > self.bounds.max_changed:
                    found.append(f"{row.name}: {count / row.fp32['n']:.1%} {what} > {self.bounds.max_changed:.1%}")
        return found

    def table(self) -> str:
        lines = [f"{'set':<16}{'n':>5}  {'AUC fp32->int8':<16}{'sensitivity':<16}{'specificity':<16}"
                 f"{'flipped':>8}{'refusals changed':>18}{'REFER moved':>13}"]
        for row in self.rows:
            pairs = "".join(f"{_pair(row, key):<16}" for key in ("auc", "sensitivity", "specificity"))
            gate = ["-" if count is None else str(count) for count in (row.refusals_changed, row.referrals_changed)]
            lines.append(f"{row.name:<16}{row.fp32['n']:>5}  {pairs}{row.flipped:>8}{gate[0]:>18}{gate[1]:>13}")
        return "\n".join(lines)

    def record(self) -> Dict[str, Any]:
        return {"bounds": asdict(self.bounds), "passed": not self.failures(),
                "sets": [asdict(row) for row in self.rows]}


def _pair(row: GuardRow, key: str) -> str:
    return f"{metric_value(row.fp32.get(key)):.4f}->{metric_value(row.int8.get(key)):.4f}"


def guard_sets(folder: str, info: ModelInfo, workers: int = 2) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """The labelled images of ``folder`` (class sub-folders named as the model's labels) and their shift
    proxies, as the network takes them (uint8 R x R); and the class index of each."""
    data_dir, split = os.path.split(os.path.normpath(folder))
    raw = load_split(data_dir, split, list(info.labels or []), replace(info.spec, equalize="none"), workers)
    pixels = raw.images.numpy()
    sets = {split: pixels}
    for offset, proxy in enumerate(PROXIES):  # the offsets are train/shift.py's seeds: the same copies
        sets[f"{split}~{proxy}"] = degrade(pixels, proxy, seed=offset)
    return ({name: np.stack([equalize(image, info.spec) for image in images]) for name, images in sets.items()},
            raw.labels.numpy())


def guard(fp32_onnx: str, int8_onnx: str, folder: str, info: ModelInfo, bounds: GuardBounds = GuardBounds(),
          workers: int = 2) -> GuardReport:
    """Score both ONNX files on ``folder`` and its proxies; the report says whether INT8 stays in bounds."""
    sets, targets = guard_sets(folder, info, workers)
    rule = DecisionRule.for_model(info.labels or [], info.positive_class, info.threshold)
    sessions = {"fp32": onnx_runtime_session(fp32_onnx), "int8": onnx_runtime_session(int8_onnx)}
    rows = []
    for name, images in sets.items():
        results: Dict[str, Answers] = {}
        for precision, session in sessions.items():
            outputs = onnx_runtime_outputs(session, normalize(images, info.spec))
            results[precision] = answers(outputs[OUTPUT_NAME], outputs.get(GATE_NAME), rule, info.gate)
        counts = changed(results["fp32"], results["int8"])
        rows.append(GuardRow(name, screening(results["fp32"], targets, rule.positive),
                             screening(results["int8"], targets, rule.positive), counts["flipped"],
                             counts.get("refusals_changed"), counts.get("referrals_changed")))
        print(f"   guard: {name} scored ({len(images)} images)", flush=True)
    return GuardReport(rows, bounds)
