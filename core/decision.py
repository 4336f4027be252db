"""The one decision rule: what a model's class probabilities decide, for every back-end, the training
metrics and the evaluation reports alike.

A two-class screening model decides by a threshold on its positive class's probability (chosen on
validation data at training time and shipped with the model); any other model decides by argmax.
The positive class is the one the model records; a model that records none (a plain
jetson-inference export) is thresholded on PNEUMONIA when it has that class, else decided by argmax.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

DEFAULT_POSITIVE_CLASS = "PNEUMONIA"
# The threshold of a model that has a positive class but records no threshold.
DEFAULT_THRESHOLD = 0.5


def class_to_record(classes: Sequence[str]) -> Optional[str]:
    """The positive class a model trained here records: PNEUMONIA, else the second of two classes."""
    if len(classes) != 2:
        return None
    return DEFAULT_POSITIVE_CLASS if DEFAULT_POSITIVE_CLASS in classes else classes[1]


def positive_index(labels: Sequence[str], recorded: Optional[str]) -> Optional[int]:
    """Index of the class the threshold applies to, from the model's own record; None: argmax."""
    if len(labels) != 2:
        return None
    name = recorded or DEFAULT_POSITIVE_CLASS
    return list(labels).index(name) if name in labels else None


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def folded(probability: float, operating_point: float) -> float:
    """A positive-class probability on the decision scale of a model with ``operating_point`` folded into
    its output: sigmoid(logit p - logit t), so that p >= t exactly when the folded value is >= 0.5."""
    return 1.0 / (1.0 + math.exp(-(_logit(probability) - _logit(operating_point))))


def fold_probabilities(probabilities: np.ndarray, positive: int, operating_point: float) -> np.ndarray:
    """Two-class ``N x C`` probabilities -> the same on the decision scale (see ``folded``)."""
    logits = np.log(np.clip(probabilities, 1e-12, None))
    logits[:, positive] -= _logit(operating_point)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def is_positive(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Positive-class probabilities -> positive calls: at or above the threshold."""
    return np.asarray(scores) >= threshold


def decided_classes(probabilities: np.ndarray, positive: Optional[int], threshold: Optional[float]) -> np.ndarray:
    """``N x C`` probabilities -> the ``N`` decided class indices: the threshold on the positive class
    of a two-class model, else argmax."""
    if positive is None or threshold is None or threshold == DEFAULT_THRESHOLD:
        # At 0.5 "p >= t" is argmax but for exact ties (a folded threshold puts the model's own cut-off
        # there), and a tie goes to the first class in jetson-inference's imageNet: argmax, so that
        # imagenet.py and classify.py decide every image alike.
        return probabilities.argmax(1)
    return np.where(is_positive(probabilities[:, positive], threshold), positive, 1 - positive)


@dataclass(frozen=True)
class Prediction:
    class_index: int
    label: str
    confidence: float  # probability of the decided class
    positive: Optional[bool]  # True/False against the threshold; None when deciding by argmax
    ranked: Tuple[Tuple[str, float], ...]  # (label, probability), most likely first

    def text(self) -> str:
        """jetson-inference overlay text for the decided class, e.g. ``93.41% PNEUMONIA``."""
        return f"{self.confidence * 100:05.2f}% {self.label}"


@dataclass(frozen=True)
class DecisionRule:
    labels: Tuple[str, ...]
    positive: Optional[int]       # the thresholded class; None: argmax
    threshold: Optional[float]    # set exactly when ``positive`` is

    @classmethod
    def for_model(cls, labels: Sequence[str], recorded_positive: Optional[str], recorded_threshold: Optional[float],
                  threshold: Optional[float] = None) -> "DecisionRule":
        """The rule a model's record gives; ``threshold`` overrides the recorded one."""
        positive = positive_index(labels, recorded_positive)
        if positive is None:
            return cls(tuple(labels), None, None)
        chosen = threshold if threshold is not None else recorded_threshold
        return cls(tuple(labels), positive, DEFAULT_THRESHOLD if chosen is None else float(chosen))

    def classes(self, probabilities: np.ndarray) -> np.ndarray:
        """``N x C`` probabilities -> the ``N`` decided class indices."""
        return decided_classes(probabilities, self.positive, self.threshold)

    def decide(self, probabilities: np.ndarray) -> Prediction:
        """One row of ``C`` probabilities -> its Prediction, classes ranked most likely first."""
        order = np.argsort(-probabilities, kind="stable")
        ranked = tuple((self.labels[i], float(probabilities[i])) for i in order)
        index = int(self.classes(probabilities[None])[0])
        positive = None if self.positive is None else index == self.positive
        return Prediction(index, self.labels[index], float(probabilities[index]), positive, ranked)

    def describe(self) -> str:
        if self.positive is None:
            return "argmax"
        return f"{self.labels[self.positive]} if p >= {self.threshold:.4f}"
