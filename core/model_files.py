"""Where a model is: the one function that turns what a user names (``$NET`` or models/pneumonia by
default, a model folder, or a file) into the file a back-end or tool loads."""
from __future__ import annotations

import glob
import os
from typing import Any, Mapping, Optional, Sequence

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import sha256_file
from cxr_jetson.core.names import BEST_CHECKPOINT, DEFAULT_MODEL_DIR, INT8_ONNX_SUFFIX, MODEL_DIR_VARIABLE

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
        if kind == "onnx":  # the INT8 ONNX beside the FP32 one is its quantized copy, not another model
            found = [path for path in found if not path.lower().endswith(INT8_ONNX_SUFFIX)]
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


def int8_model(path: str) -> str:
    """``--precision int8``: the quantized ONNX of a model folder or of an FP32 ONNX, which
    ``onnx_export.py --int8`` writes beside it as ``<arch>.int8.onnx``; a named INT8 ONNX is taken as given."""
    if os.path.isfile(path) and path.lower().endswith(INT8_ONNX_SUFFIX):
        return path
    fp32 = locate_model(path, ("onnx",))
    quantized = fp32[:-len(".onnx")] + INT8_ONNX_SUFFIX
    if not os.path.isfile(quantized):
        folder = os.path.dirname(fp32) or "."
        raise ModelNotFoundError(f"no INT8 model {os.path.basename(quantized)} beside {fp32}: run python3 "
                                 f"onnx_export.py --model-dir {folder} --int8")
    return quantized


def stale_int8(int8_path: str, quantization: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why an INT8 ONNX no longer belongs to the FP32 ONNX beside it (exported again since it was quantized,
    so it would answer for an older model), or None; ``quantization`` is its ``cxr.quantization`` record."""
    record = quantization or {}
    source = os.path.join(os.path.dirname(int8_path), str(record.get("source", "")))
    if not record.get("source_sha256") or not os.path.isfile(source) or os.path.isdir(source):
        return None
    if sha256_file(source) == record["source_sha256"]:
        return None
    return (f"{os.path.basename(int8_path)} was quantized from an earlier {os.path.basename(source)}: make it again "
            f"with python3 onnx_export.py --model-dir {os.path.dirname(int8_path) or '.'} --int8")
