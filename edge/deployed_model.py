"""A model ready to classify: back-end, labels, preprocessing and decision threshold, resolved once."""
from __future__ import annotations

import glob
import os
from typing import List, Optional

import numpy as np

from edge.backends import Backend, open_backend
from edge.cli import ToolkitError
from edge.labels import check_label_count, read_labels
from edge.model_info import ModelInfo, positive_index
from edge.prediction import Prediction, decide
from edge.preprocess import PreprocessSpec, normalize

DEFAULT_MODEL_DIR = os.path.join("models", "pneumonia")


class ModelNotFoundError(ToolkitError):
    """No usable model at the path given."""


def default_model_path() -> str:
    """``$NET`` (the variable jetson-inference's docs use for the model dir), else models/pneumonia."""
    return os.environ.get("NET") or DEFAULT_MODEL_DIR


def resolve_model_file(path: str) -> str:
    """A model dir or a model file -> the .onnx to load, with a one-line error naming the next step."""
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model {path} not found: train one with train.py, export it with "
                                 "onnx_export.py, and pass its folder or .onnx with --model")
    if os.path.isfile(path):
        if not path.lower().endswith(".onnx"):
            raise ModelNotFoundError(f"{path} is not an .onnx model")
        return path
    candidates = sorted(glob.glob(os.path.join(path, "*.onnx")))
    if not candidates:
        raise ModelNotFoundError(f"no .onnx model in {path}: run python3 onnx_export.py --model-dir {path}")
    if len(candidates) > 1:
        names = ", ".join(os.path.basename(c) for c in candidates)
        raise ModelNotFoundError(f"{path} holds several models ({names}); pass one with --model")
    return candidates[0]


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
                 threshold: Optional[float] = None, threads: int = 0) -> None:
        self.model_file = resolve_model_file(model)
        self.backend: Backend = open_backend(backend, self.model_file, threads=threads)
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

    def predict(self, images: np.ndarray) -> List[Prediction]:
        """uint8 ``N x R x R`` network-size images -> one Prediction each."""
        batch = normalize(images, self.spec)
        step = self.backend.max_batch
        probabilities = np.concatenate([self.backend.infer(batch[i:i + step]) for i in range(0, len(batch), step)])
        return [decide(row, self.labels, self.threshold, self.positive) for row in probabilities]

    def describe(self) -> str:
        if self.positive is None:
            rule = "argmax"
        else:
            rule = f"{self.labels[self.positive]} if p >= {self.threshold:.4f}"
        return f"{os.path.basename(self.model_file)} on {self.backend.describe()}; decision: {rule}"
