"""Where a model is: the one function that turns what a user names (``$NET`` or models/pneumonia by
default, a model folder, or a file) into the file a back-end or tool loads."""
from __future__ import annotations

import glob
import os
from typing import Sequence

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT, DEFAULT_MODEL_DIR, MODEL_DIR_VARIABLE

# What each kind of model file looks like inside a model folder.
_PATTERNS = {"onnx": "*.onnx", "engine": "*.engine", "checkpoint": BEST_CHECKPOINT}
_SUFFIXES = {"onnx": (".onnx",), "engine": (".engine",), "checkpoint": (".pth.tar", ".pth", ".pt")}


class ModelNotFoundError(ToolkitError):
    """No usable model at the path given."""


def default_model_path() -> str:
    """``$NET`` (the variable jetson-inference's docs use for the model dir), else models/pneumonia."""
    return os.environ.get(MODEL_DIR_VARIABLE) or DEFAULT_MODEL_DIR


def in_model_dir(model_dir: str, path: str) -> str:
    """jetson-inference's rule: a bare file name lives in ``model_dir``, a path is taken as given."""
    return os.path.join(model_dir, path) if model_dir and not os.path.dirname(path) else path


def _in_folder(folder: str, kinds: Sequence[str]) -> str:
    for kind in kinds:
        found = sorted(glob.glob(os.path.join(folder, _PATTERNS[kind])))
        if len(found) > 1:
            names = ", ".join(os.path.basename(f) for f in found)
            raise ModelNotFoundError(f"{folder} holds several models ({names}); pass one with --model")
        if found:
            return found[0]
    if kinds[0] == "checkpoint":
        raise ModelNotFoundError(f"no {BEST_CHECKPOINT} in {folder}: train one with train.py")
    wanted = " or ".join(f".{kind}" for kind in kinds)
    raise ModelNotFoundError(f"no {wanted} model in {folder}: run python3 onnx_export.py --model-dir {folder}")


def locate_model(path: str, kinds: Sequence[str] = ("onnx",)) -> str:
    """A model folder or file -> the file to load, of the first of ``kinds`` (onnx, engine, checkpoint)
    the folder holds exactly one of. A checkpoint is also found beside a named .onnx or .engine,
    since export writes the ONNX next to the checkpoint it came from."""
    if not os.path.exists(path):
        raise ModelNotFoundError(f"model {path} not found: train one with train.py, export it with "
                                 "onnx_export.py, and pass its folder or file with --model")
    if os.path.isdir(path):
        return _in_folder(path, kinds)
    lowered = path.lower()
    if any(lowered.endswith(suffix) for kind in kinds for suffix in _SUFFIXES[kind]):
        return path
    if "checkpoint" in kinds and lowered.endswith((".onnx", ".engine")):
        return _in_folder(os.path.dirname(path) or ".", ("checkpoint",))
    raise ModelNotFoundError(f"{path} is not a {' or '.join(kinds)} model file")
