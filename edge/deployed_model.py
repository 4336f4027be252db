"""A model ready to classify: back-end, labels, preprocessing and decision rule, resolved and checked once.

Checked at load, so that no answer is silently wrong: labels given on the command line must be the
model's own, by name and order (``relabel`` renames them in the model's order instead); and the
model's ``output_0`` must be probabilities: a model that gives logits (jetson-inference's exporter has
``--no-activation``) gets a softmax applied, with a warning; one whose rows do not sum to 1 is refused.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from cxr_jetson.core.decision import DecisionRule, Prediction, folded
from cxr_jetson.core.errors import InputWarning, ToolkitError
from cxr_jetson.core.input_gate import GatePolicy, Verdict, verdict
from cxr_jetson.core.labels import LabelsError, check_label_count, read_labels
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import LABELS_FILE
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.edge.backends import Backend, BackendOptions, open_backend

# How far from a probability distribution a row of output_0 may be (FP16 engines round).
_PROBABILITY_TOLERANCE = 2e-3


def _own_labels(info: ModelInfo, model_file: str, num_classes: int) -> Tuple[List[str], Optional[str]]:
    """The model's own class names, and where they come from (its metadata, else labels.txt beside it;
    None: the model names no classes, and "class #N" stands in)."""
    beside = os.path.join(os.path.dirname(model_file), LABELS_FILE)
    if info.labels:
        labels, source = list(info.labels), f"the labels embedded in {model_file}"
    elif os.path.isfile(beside):
        labels, source = read_labels(beside), beside
    else:
        return [f"class #{index}" for index in range(num_classes)], None
    check_label_count(labels, num_classes, source)
    return labels, source


def _shown_labels(labels_path: Optional[str], own: List[str], own_source: Optional[str], num_classes: int,
                  relabel: bool) -> List[str]:
    """The names drawn and written: the model's own, or --labels when they are the same or --relabel says so."""
    if not labels_path:
        return own
    given = read_labels(labels_path)
    check_label_count(given, num_classes, labels_path)
    if given != own and own_source is not None:
        if not relabel:
            raise LabelsError(f"{labels_path} lists {given}, but the model's classes are {own} (from {own_source}): "
                              "the names and their order decide which probability is which class's; pass --relabel "
                              "to show these names in the model's class order")
        warnings.warn(f"--relabel: the model's classes {own} are shown as {given}", InputWarning, stacklevel=3)
    return given


class DeployedModel:
    def __init__(self, model: str, backend: str = "auto", labels: Optional[str] = None,
                 threshold: Optional[float] = None, options: BackendOptions = BackendOptions(),
                 relabel: bool = False, gate: bool = True) -> None:
        self.backend: Backend = open_backend(backend, model, options)
        self.model_file = self.backend.model_file
        info = self.backend.info
        # Without recorded preprocessing, jetson-inference's applies: whole frame, ImageNet mean/std.
        self.spec: PreprocessSpec = info.spec or PreprocessSpec(resolution=self.backend.resolution)
        if self.spec.resolution != self.backend.resolution:
            raise ToolkitError(f"{self.model_file} takes {self.backend.resolution}px input but its metadata "
                               f"says {self.spec.resolution}px; re-export the model")
        own, own_source = _own_labels(info, self.model_file, self.backend.num_classes)
        self.labels = _shown_labels(labels, own, own_source, self.backend.num_classes, relabel)
        if own_source is None:  # a model that names no classes takes the names it is given
            own = self.labels
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ToolkitError(f"--threshold {threshold} is outside 0..1")
        self.folded_threshold = info.folded_threshold
        if threshold is not None and self.folded_threshold is not None and 0.0 < threshold < 1.0:
            # A threshold on the calibrated probability, moved onto the model's decision scale.
            threshold = folded(threshold, self.folded_threshold)
        # The positive class is found among the model's own names; the names shown may be others (--relabel).
        rule = DecisionRule.for_model(own, info.positive_class, info.threshold, threshold)
        self.rule = dataclasses.replace(rule, labels=tuple(self.labels))
        self.softmax_applied = self._outputs_are_logits()
        # The gate answers only where the model computes its scores; --no-gate turns it off.
        self.gate: Optional[GatePolicy] = info.gate if gate and self.backend.has_gate else None

    def _outputs_are_logits(self) -> bool:
        """Probe two images: True when output_0 is logits (a softmax is then applied); refuse anything else
        that is not a probability distribution per row."""
        side = self.spec.resolution
        probes = np.stack([np.full((side, side), 128, np.uint8),
                           np.tile(np.linspace(0, 255, side).astype(np.uint8), (side, 1))])
        output = np.concatenate([self.backend.run_all(normalize(probe[None], self.spec))[0] for probe in probes])
        name = os.path.basename(self.model_file)
        if output.min() < -_PROBABILITY_TOLERANCE or output.max() > 1 + _PROBABILITY_TOLERANCE:
            warnings.warn(f"{name}'s {self.backend.output_name} is not probabilities (values from {output.min():.2f} "
                          f"to {output.max():.2f}: logits, as from an export with --no-activation): a softmax is "
                          "applied to it", InputWarning, stacklevel=3)
            return True
        sums = output.sum(axis=1)
        if np.abs(sums - 1).max() > _PROBABILITY_TOLERANCE:
            raise ToolkitError(f"{name}'s {self.backend.output_name} rows sum to {sums.min():.3f}-{sums.max():.3f}, "
                               "not 1: not softmax probabilities (a multi-label model?), which this runner cannot "
                               "decide on")
        return False

    def run(self, images: np.ndarray) -> Tuple[np.ndarray, ...]:
        """uint8 ``N x R x R`` network-size images -> (``N x C`` probabilities,) plus, when the model has
        them, ``N x C x h x w`` class activation maps; in back-end-sized batches."""
        batch = normalize(images, self.spec)
        step = self.backend.max_batch
        parts = [self.backend.run_all(batch[i:i + step]) for i in range(0, len(batch), step)]
        outputs = [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]
        if self.softmax_applied:
            shifted = np.exp(outputs[0] - outputs[0].max(axis=1, keepdims=True))
            outputs[0] = shifted / shifted.sum(axis=1, keepdims=True)
        return tuple(outputs)

    def split(self, outputs: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """``run``'s outputs -> (probabilities, class activation maps or None, gate scores or None)."""
        cams = outputs[1] if self.backend.has_cam else None
        return outputs[0], cams, (outputs[-1] if self.backend.has_gate else None)

    def verdict(self, probabilities: np.ndarray, scores: Optional[np.ndarray], refusal: Optional[str] = None,
                warnings: Sequence[str] = ()) -> Verdict:
        """One input's answer: its Prediction, unless the gate refuses the input or refers the case."""
        positive = self.rule.positive
        # The REFER band is on the decision scale, where 50% is the threshold in use.
        decision = None if positive is None else folded(float(probabilities[positive]), self.rule.threshold)
        return verdict(self.decide(probabilities), decision, scores, self.gate, refusal, warnings)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]

    def decide(self, probabilities: np.ndarray) -> Prediction:
        return self.rule.decide(probabilities)

    def predict(self, images: np.ndarray) -> List[Prediction]:
        """uint8 ``N x R x R`` network-size images -> one Prediction each."""
        return [self.decide(row) for row in self.probabilities(images)]

    def describe(self) -> str:
        folded_in = (f" (operating point {self.folded_threshold:.4f} folded into the output: 50% is the threshold)"
                     if self.folded_threshold is not None else "")
        gate = ""
        if self.gate is not None:
            low, high = self.gate.refer_band
            gate = f"; input gate on, REFER between {low:.1%} and {high:.1%} (decision scale)"
        return (f"{os.path.basename(self.model_file)} on {self.backend.describe()}; decision: "
                f"{self.rule.describe()}{folded_in}{gate}")
