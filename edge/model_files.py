"""Where a model is: ``$NET`` or models/pneumonia by default, a folder, or a file."""
from __future__ import annotations

import glob
import os

from edge.cli import ToolkitError

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
