"""A model ready to classify: back-end, labels, preprocessing and decision threshold, resolved once."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from edge.backends import Backend, open_backend
from edge.cli import ToolkitError
from edge.labels import check_label_count, read_labels
from edge.model_info import ModelInfo, positive_index
from edge.prediction import Prediction, decide
from edge.preprocess import PreprocessSpec, normalize


def _resolve_labels(labels_path: Optional[str], info: ModelInfo, model_file: str, num_classes: int) -> List[str]:
    if labels_path:
        labels, source = read_labels(labels_path), labels_path
    elif info.labels:
        labels, source = list(info.labels), f"the labels embedded in {model_file}"
    elif os.path.isfile(os.path.join(os.path.dirname(model_file), "labels.txt")):
        source = os.path.join(os.path.dirname(model_file), "labels.txt")
        labels = read_labels(source)
    else:
        return [f"class #{index}" for index in range(num_classes)]
    check_label_count(labels, num_classes, source)
    return labels


class DeployedModel:
    def __init__(self, model: str, backend: str = "auto", labels: Optional[str] = None,
                 threshold: Optional[float] = None, threads: int = 0, precision: Optional[str] = None,
                 batch_size: int = 1, build: bool = True) -> None:
        self.backend: Backend = open_backend(backend, model, threads=threads, precision=precision,
                                             batch_size=batch_size, build=build)
        self.model_file = self.backend.model_file
        self.info = ModelInfo.from_metadata(self.backend.metadata)
        # Without recorded preprocessing, jetson-inference's applies: whole frame, ImageNet mean/std.
        self.spec: PreprocessSpec = self.info.spec or PreprocessSpec(resolution=self.backend.resolution)
        if self.spec.resolution != self.backend.resolution:
            raise ToolkitError(f"{self.model_file} takes {self.backend.resolution}px input but its metadata "
                               f"says {self.spec.resolution}px; re-export the model")
        self.labels = _resolve_labels(labels, self.info, self.model_file, self.backend.num_classes)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ToolkitError(f"--threshold {threshold} is outside 0..1")
        self.positive = positive_index(self.labels, self.info.positive_class)
        # Without a stored threshold (e.g. a plain jetson-inference export) the positive class wins
        # when it is the more likely one.
        chosen = threshold if threshold is not None else self.info.threshold
        self.threshold = chosen if chosen is not None else (0.5 if self.positive is not None else None)

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
        return decide(probabilities, self.labels, self.threshold, self.positive)

    def predict(self, images: np.ndarray) -> List[Prediction]:
        """uint8 ``N x R x R`` network-size images -> one Prediction each."""
        return [self.decide(row) for row in self.probabilities(images)]

    def describe(self) -> str:
        if self.positive is None:
            rule = "argmax"
        else:
            rule = f"{self.labels[self.positive]} if p >= {self.threshold:.4f}"
        return f"{os.path.basename(self.model_file)} on {self.backend.describe()}; decision: {rule}"
