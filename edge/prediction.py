"""Turn a row of class probabilities into a decision, the same way for every back-end."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Prediction:
    class_index: int
    label: str
    confidence: float  # probability of the predicted class
    positive: Optional[bool]  # True/False against the threshold; None when deciding by argmax
    ranked: Tuple[Tuple[str, float], ...]  # (label, probability), most likely first

    def text(self) -> str:
        """jetson-inference overlay text for the decided class, e.g. ``93.41% PNEUMONIA``."""
        return f"{self.confidence * 100:05.2f}% {self.label}"


def decide(probabilities: np.ndarray, labels: List[str], threshold: Optional[float],
           positive: Optional[int]) -> Prediction:
    """Positive class when its probability reaches the threshold, else the other class; argmax for
    models without a positive class or threshold."""
    order = np.argsort(-probabilities, kind="stable")
    ranked = tuple((labels[i], float(probabilities[i])) for i in order)
    if positive is None or threshold is None:
        index = int(order[0])
        return Prediction(index, labels[index], float(probabilities[index]), None, ranked)
    is_positive = bool(probabilities[positive] >= threshold)
    index = positive if is_positive else 1 - positive
    return Prediction(index, labels[index], float(probabilities[index]), is_positive, ranked)
