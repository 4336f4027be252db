"""The checkpoint format, written and read here alone: written atomically, read with
``weights_only=True`` (a checkpoint is untrusted input).

The payload keeps jetson-inference's keys (epoch, arch, resolution, classes, num_classes,
multi_label, state_dict, accuracy, loss, optimizer) so its tools can read ours, and adds what exact
resume and deployment need: scheduler, scaler and RNG states, the best metric and its epoch, the
decision threshold, its policy and positive class, the preprocessing spec, validation metrics, the
history, the run's arguments and what it was trained on.
"""
from __future__ import annotations

import os
import pickle
import shutil
from typing import Any, Dict, List, Optional, Sequence

import torch

from cxr_jetson.core.decision import class_to_record
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import atomic_path
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.preprocess import PreprocessSpec

REQUIRED_KEYS = ("arch", "num_classes", "state_dict")


class CheckpointError(ToolkitError):
    """A checkpoint that cannot be trusted or used."""


def training_checkpoint(*, epoch: int, arch: str, classes: Sequence[str], spec: PreprocessSpec,
                        state_dict: Dict[str, torch.Tensor], optimizer: Dict[str, Any], accuracy: Dict[str, float],
                        loss: Dict[str, float], threshold: Optional[float], threshold_policy: str,
                        scheduler: Dict[str, Any], scaler: Optional[Dict[str, Any]], rng: Dict[str, Any],
                        best: Dict[str, Any], history: List[Dict[str, Any]], val_metrics: Dict[str, float],
                        args: Dict[str, Any], head_dropout: float, data: Dict[str, Any]) -> Dict[str, Any]:
    """The payload of a checkpoint written during training (accuracy in percent, as jetson-inference's)."""
    return {
        # jetson-inference's keys
        "epoch": epoch, "arch": arch, "resolution": spec.resolution, "classes": list(classes),
        "num_classes": len(classes), "multi_label": False, "state_dict": state_dict, "accuracy": accuracy,
        "loss": loss, "optimizer": optimizer,
        # the decision the model ships with, and how its input is made
        "threshold": threshold, "threshold_policy": threshold_policy, "positive_class": class_to_record(classes),
        "preprocess": spec.to_dict(),
        # exact resume
        "scheduler": scheduler, "scaler": scaler, "rng": rng, "best": best, "history": history,
        # the record the reports and the model card read
        "val_metrics": val_metrics, "args": args, "head_dropout": head_dropout, "data": data,
    }


def save_atomic(payload: Dict[str, Any], path: str) -> None:
    """torch.save through a temporary file and a rename: a run killed at any moment leaves the previous
    checkpoint or the new one, never a torn one."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def copy_atomic(source: str, destination: str) -> None:
    """``destination`` becomes a copy of ``source``: a hard link where the filesystem allows, which is
    instant for a 1 GB VGG checkpoint and safe, because checkpoints are replaced by rename, never
    rewritten in place."""
    with atomic_path(destination) as temporary:
        try:
            os.unlink(temporary)
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)


# torch.save writes a zip archive; files from before PyTorch 1.6 (and jetson-inference's oldest) are a
# bare pickle, which starts with the PROTO opcode.
_CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_checkpoint_file(path: str) -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors; tensors always land on the CPU."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    with open(path, "rb") as handle:
        start = handle.read(4)
    if not start.startswith(_CHECKPOINT_STARTS):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (corrupt, or another kind of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph; the line naming what was refused is the useful one
        lines = str(err).splitlines()
        detail = next((line.strip() for line in lines if "nsupported" in line), lines[0] if lines else "")[:160]
        raise CheckpointError(f"refusing to load {path}: it holds Python objects other than tensors and "
                              f"plain containers, which could run code ({detail})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{str(err).splitlines()[0][:160]}") from None


def load_checkpoint(path: str) -> Dict[str, Any]:
    """A training checkpoint (ours or jetson-inference's) as a dict with at least REQUIRED_KEYS."""
    data = load_checkpoint_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a training checkpoint")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing and all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is a bare state dict, not a training checkpoint; "
                              "start training from it with --weights instead")
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it is not a training checkpoint")
    return data


def preprocess_spec(checkpoint: Dict[str, Any]) -> PreprocessSpec:
    """The preprocessing a checkpoint was trained with (jetson-inference checkpoints: the defaults)."""
    if checkpoint.get("preprocess"):
        return PreprocessSpec.from_dict(checkpoint["preprocess"])
    return PreprocessSpec(resolution=int(checkpoint.get("resolution", 224)))


def model_info(checkpoint: Dict[str, Any], provenance: Dict[str, Any]) -> ModelInfo:
    """What a deployed model carries about itself (ONNX metadata, engine sidecar), from its checkpoint."""
    classes = list(checkpoint.get("classes") or [f"class #{i}" for i in range(checkpoint["num_classes"])])
    return ModelInfo(labels=classes, spec=preprocess_spec(checkpoint), threshold=checkpoint.get("threshold"),
                     positive_class=checkpoint.get("positive_class"),
                     threshold_policy=checkpoint.get("threshold_policy"), arch=checkpoint["arch"],
                     provenance=provenance)
