"""The input gate's scores as network layers, computed in the same pass as the classification: the ONNX's
third output ``gate_0``, with the columns of core/input_gate.py's GATE_COLUMNS, so TensorRT and ONNX
Runtime run the gate with the model at the cost of a few small matrix products.

- ``mahalanobis``: Lee et al. (2018)'s score on the pooled features: the squared distance to the
  nearest class mean under the shared covariance of the training images' features (Ledoit-Wolf
  shrunk), divided by the feature count so that it stays near 1 in scope and within FP16's range;
- ``energy``: Liu et al. (2020)'s free energy, -logsumexp of the logits (lower: more in scope);
- ``layout_*``: the correlation of the equalised image's G x G mean layout with the training images'
  mean layout, upright and rotated by 90, 180 and 270 degrees (a chest X-ray has a layout: dark lungs
  either side of a bright spine, bright abdomen below; an inverted film correlates negatively);
- ``grey_std``: the standard deviation of the input's grey levels before equalisation.

The statistics live in ``input_gate.npz`` in the model folder (train/input_gate.py fits them), with the
policy that reads the scores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.input_gate import GatePolicy

GATE_FILE = "input_gate.npz"


def layout_grid(resolution: int) -> int:
    """The side of the layout grid: the largest of 16..8 that divides the resolution (pooling is exact)."""
    return next((side for side in range(16, 7, -1) if resolution % side == 0), 0)


@dataclass
class GateStatistics:
    class_means: np.ndarray     # C x D pooled-feature means of the training images, per class
    whitening: np.ndarray       # D x D: L with L L^T the precision matrix of the shared covariance
    layout: np.ndarray          # G x G mean standardised layout of the equalised training images
    policy: GatePolicy

    def save(self, path: str) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, class_means=self.class_means.astype(np.float32),
                     whitening=self.whitening.astype(np.float32), layout=self.layout.astype(np.float32),
                     policy=np.array(self.policy.to_json()))

    @classmethod
    def load(cls, path: str) -> "GateStatistics":
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(stored["class_means"], stored["whitening"], stored["layout"],
                           GatePolicy.from_json(str(stored["policy"])))
        except (OSError, KeyError, ValueError) as err:
            raise ToolkitError(f"{path} is not a readable input gate: {err}") from None


def gate_beside(model_file: str) -> Optional[GateStatistics]:
    """The gate fitted for the model in ``model_file``'s folder, if there is one."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_file)), GATE_FILE)
    return GateStatistics.load(path) if os.path.isfile(path) else None


def standardised_layout(seen: torch.Tensor, grid: int) -> torch.Tensor:
    """``N x 3 x R x R`` network input -> ``N x G*G`` zero-mean, unit-norm mean layouts of channel 0."""
    cells = F.avg_pool2d(seen[:, :1], kernel_size=seen.shape[-1] // grid).flatten(1)
    centred = cells - cells.mean(dim=1, keepdim=True)
    return centred / (centred.norm(dim=1, keepdim=True) + 1e-6)


class GateScores(nn.Module):
    """``gate_0`` from the raw input, the input the classifier saw, its pooled features and its logits."""

    def __init__(self, statistics: GateStatistics, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        whitening = torch.from_numpy(np.asarray(statistics.whitening, np.float32))
        self.register_buffer("whitening", whitening)
        self.register_buffer("whitened_means", torch.from_numpy(np.asarray(statistics.class_means, np.float32)) @ whitening)
        layout = torch.from_numpy(np.asarray(statistics.layout, np.float32))
        self.grid = layout.shape[0]
        templates = [torch.rot90(layout, k, dims=(0, 1)).flatten() for k in range(4)]
        self.register_buffer("templates", torch.stack(templates, dim=1))  # G*G x 4
        self.grey_mean, self.grey_std = float(mean[0]), float(std[0])

    def forward(self, raw: torch.Tensor, seen: torch.Tensor, pooled: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        whitened = pooled @ self.whitening
        distances = ((whitened[:, None, :] - self.whitened_means[None]) ** 2).mean(dim=2)
        mahalanobis = distances.min(dim=1, keepdim=True).values
        energy = -torch.logsumexp(logits, dim=1, keepdim=True)
        layouts = standardised_layout(seen, self.grid) @ self.templates
        grey = (raw[:, :1] * self.grey_std + self.grey_mean) * 255.0
        grey_std = (grey - grey.mean(dim=(2, 3), keepdim=True)).pow(2).mean(dim=(2, 3)).clamp_min(0).sqrt()
        return torch.cat([mahalanobis, energy, layouts, grey_std], dim=1)
