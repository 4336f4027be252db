"""Checkpoints: written atomically, read with ``weights_only=True`` (a checkpoint is untrusted input).

The payload keeps jetson-inference's keys (epoch, arch, resolution, classes, num_classes,
multi_label, state_dict, accuracy, loss, optimizer) so its tools can read ours, and adds what exact
resume and deployment need: scheduler, scaler and RNG states, the best metric and its epoch, the
decision threshold and its policy, the preprocessing spec, validation metrics and the history.
"""
from __future__ import annotations

import os
import pickle
import shutil
from typing import Any, Dict

import torch

from edge.files import atomic_path
from edge.cli import ToolkitError
from edge.model_info import ModelInfo, default_positive_class
from edge.preprocess import PreprocessSpec

CHECKPOINT = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
REQUIRED_KEYS = ("arch", "num_classes", "state_dict")


class CheckpointError(ToolkitError):
    """A checkpoint that cannot be trusted or used."""


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


def load_checkpoint_file(path: str) -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors; tensors always land on the CPU."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).split("\n")[0][:160]
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
                     positive_class=checkpoint.get("positive_class") or default_positive_class(classes),
                     threshold_policy=checkpoint.get("threshold_policy"), arch=checkpoint["arch"],
                     provenance=provenance)
