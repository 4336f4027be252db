"""A model ready to classify: back-end, labels, preprocessing and decision rule, resolved once."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from cxr_jetson.core.decision import DecisionRule, Prediction, folded
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.labels import check_label_count, read_labels
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import LABELS_FILE
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.edge.backends import Backend, BackendOptions, open_backend


def _resolve_labels(labels_path: Optional[str], info: ModelInfo, model_file: str, num_classes: int) -> List[str]:
    beside = os.path.join(os.path.dirname(model_file), LABELS_FILE)
    if labels_path:
        labels, source = read_labels(labels_path), labels_path
    elif info.labels:
        labels, source = list(info.labels), f"the labels embedded in {model_file}"
    elif os.path.isfile(beside):
        labels, source = read_labels(beside), beside
    else:
        return [f"class #{index}" for index in range(num_classes)]
    check_label_count(labels, num_classes, source)
    return labels


class DeployedModel:
    def __init__(self, model: str, backend: str = "auto", labels: Optional[str] = None,
                 threshold: Optional[float] = None, options: BackendOptions = BackendOptions()) -> None:
        self.backend: Backend = open_backend(backend, model, options)
        self.model_file = self.backend.model_file
        info = self.backend.info
        # Without recorded preprocessing, jetson-inference's applies: whole frame, ImageNet mean/std.
        self.spec: PreprocessSpec = info.spec or PreprocessSpec(resolution=self.backend.resolution)
        if self.spec.resolution != self.backend.resolution:
            raise ToolkitError(f"{self.model_file} takes {self.backend.resolution}px input but its metadata "
                               f"says {self.spec.resolution}px; re-export the model")
        self.labels = _resolve_labels(labels, info, self.model_file, self.backend.num_classes)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ToolkitError(f"--threshold {threshold} is outside 0..1")
        self.folded_threshold = info.folded_threshold
        if threshold is not None and self.folded_threshold is not None and 0.0 < threshold < 1.0:
            # A threshold on the calibrated probability, moved onto the model's decision scale.
            threshold = folded(threshold, self.folded_threshold)
        self.rule = DecisionRule.for_model(self.labels, info.positive_class, info.threshold, threshold)

    def run(self, images: np.ndarray) -> Tuple[np.ndarray, ...]:
        """uint8 ``N x R x R`` network-size images -> (``N x C`` probabilities,) plus, when the model has
        them, ``N x C x h x w`` class activation maps; in back-end-sized batches."""
        batch = normalize(images, self.spec)
        step = self.backend.max_batch
        parts = [self.backend.run_all(batch[i:i + step]) for i in range(0, len(batch), step)]
        return tuple(np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))

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
        return (f"{os.path.basename(self.model_file)} on {self.backend.describe()}; decision: "
                f"{self.rule.describe()}{folded_in}")
