"""Before an ONNX is kept, it must give torch's answers: ONNX Runtime (the device runner's CPU
back-end) runs real images through the shared preprocessing and its outputs are compared with torch's."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.image_files import InputError, expand_input
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, normalize, resize_to_network
from cxr_jetson.data.synthetic import synthetic_xray

VERIFY_IMAGES = 16


def verification_images(folder: Optional[str], spec: PreprocessSpec) -> Tuple[np.ndarray, str]:
    """Up to VERIFY_IMAGES real images spread over ``folder``, as uint8 network-size arrays."""
    paths: List[str] = []
    if folder and os.path.isdir(folder):
        try:
            paths = [image.path for image in expand_input(folder)[0]]
        except InputError:
            paths = []
    if paths:
        chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(VERIFY_IMAGES, len(paths))).astype(int)]
        images = []
        for path in chosen:
            try:
                images.append(load_for_network(path, spec))
            except ToolkitError:
                continue
        if images:
            return np.stack(images), f"{len(images)} images from {folder}"
    # No data at hand (e.g. a checkpoint copied alone): drawn X-ray-like pictures still exercise the graph.
    rng = np.random.default_rng(0)
    pictures = [synthetic_xray(rng, i % 2 == 1, spec.resolution * 2, spec.resolution * 2) for i in range(8)]
    return np.stack([resize_to_network(p, spec) for p in pictures]), "8 synthetic images (no data folder found)"


def verify(model: nn.Module, onnx_path: str, images: np.ndarray, spec: PreprocessSpec) -> List[float]:
    """Per output, the largest |ONNX Runtime - torch| over ``images``: absolute for the probabilities,
    relative to the maps' largest magnitude for the activation maps (they are on the logit scale)."""
    batch = normalize(images, spec)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch))
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    actual = list(onnx_runtime_outputs(onnx_runtime_session(onnx_path), batch).values())
    differences = []
    for index, reference in enumerate(expected):
        error = float(np.max(np.abs(actual[index] - reference)))
        differences.append(error if index == 0 else error / max(float(np.abs(reference).max()), 1e-12))
    return differences




def onnx_runtime_session(onnx_path: str):
    """An ONNX Runtime session on the CPU, the runtime every export is checked in."""
    try:
        import onnxruntime
    except ImportError:
        raise ToolkitError("verifying the export needs ONNX Runtime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not actionable for users
    return onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def onnx_runtime_outputs(session, batch: np.ndarray) -> Dict[str, np.ndarray]:
    """Every output of the session's ONNX for ``batch``, by name, run in chunks of the graph's own batch size."""
    declared = session.get_inputs()[0].shape[0]
    step = declared if isinstance(declared, int) else len(batch)
    names = [output.name for output in session.get_outputs()]
    feed = session.get_inputs()[0].name
    parts = [session.run(names, {feed: batch[i:i + step]}) for i in range(0, len(batch), step)]
    return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(names)}
