"""OpenCV's ``equalizeHist`` as network layers, so the equalisation a model was trained on travels inside
its ONNX and every runtime that feeds jetson-style normalised RGB (jetson-inference's imagenet.py,
DeepStream, Triton, this toolkit's back-ends) gives the network the same input from the same frame.

The input is what such runtimes feed: ``N x 3 x R x R`` float, each channel ``(x / 255 - mean) / std``.
The grey level of each pixel is recovered (BT.601 weights, as OpenCV's grey conversion; for an X-ray
the three channels are equal), its histogram taken, and OpenCV's lookup table applied:
``lut[k] = round((cdf[k] - cdf[first]) * 255 / (pixels - cdf[first]))`` (an image of one grey level is
left as it is). The output is the equalised grey, normalised again, in all three channels.

Only operators that TensorRT 8.5 and later parse, with no integer tensors: the cumulative histogram is
built from comparisons and matrix products. A grey level is split into its high and low 4 bits (16 x
16 = 256 levels); ``onehot(high)^T @ step(low)`` counts, per high value, the pixels at or below each
low value, and a triangular matrix product adds the counts of the lower high values. The lookup is the
same decomposition in reverse. This costs 16 x 16 multiply-adds per pixel (2 x 802 k values at 224 px)
instead of a 256-wide comparison per pixel. Counts go up to R x R, exact in float32: engines keep
these layers in float32 (core/names.py FLOAT32_SCOPES: DeployedNetwork's attribute is named for it).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

# OpenCV's RGB -> grey weights (BT.601).
GREY_WEIGHTS = (0.299, 0.587, 0.114)


class EqualizeHist(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("grey_weights", torch.tensor(GREY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("nibbles", torch.arange(16, dtype=torch.float32))
        # below[a, a'] = 1 where a' > a: adds, for each high value a', the counts of every lower one.
        self.register_buffer("below", torch.triu(torch.ones(16, 16), diagonal=1))

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB ``N x 3 x R x R`` -> grey levels 0..255 (whole numbers, as float) ``N x R*R``."""
        grey = ((x * self.std + self.mean) * self.grey_weights).sum(dim=1)
        return torch.clamp(torch.round(grey * 255.0), 0.0, 255.0).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.levels(x)
        high = torch.floor(levels / 16.0)
        low = levels - high * 16.0
        one_high = (high.unsqueeze(2) == self.nibbles).float()               # N x P x 16
        one_low = (low.unsqueeze(2) == self.nibbles).float()                 # N x P x 16
        low_at_or_below = (low.unsqueeze(2) < self.nibbles + 0.5).float()    # N x P x 16
        within = torch.matmul(one_high.transpose(1, 2), low_at_or_below)     # N x 16 x 16
        row_counts = within[:, :, 15]                                        # pixels per high value
        cdf = (within + torch.matmul(row_counts, self.below).unsqueeze(2)).flatten(1)  # N x 256
        pixels = cdf[:, -1:]                                                 # every pixel is at or below 255
        # The count at the darkest level present: the smallest non-zero cumulative count.
        first = torch.min(torch.where(cdf > 0, cdf, pixels.expand_as(cdf)), dim=1, keepdim=True).values
        spread = pixels - first
        # OpenCV's float scale = 255 / (pixels - first), then sum * scale: a true division here, because
        # "255.0 / tensor" runs as 255 * reciprocal(tensor), which rounds differently (178.49998 -> 179, not 178).
        scale = torch.div(torch.full_like(spread, 255.0), torch.clamp(spread, min=1.0))
        lut = torch.clamp(torch.round((cdf - first) * scale), 0.0, 255.0)
        # lut[level] by the same decomposition: (onehot(high) @ lut[16 x 16]) . onehot(low)
        equalised = (torch.matmul(one_high, lut.view(-1, 16, 16)) * one_low).sum(dim=2)
        equalised = torch.where(spread > 0, equalised, levels)  # one grey level: unchanged, as in OpenCV
        grey = equalised.view(x.shape[0], 1, x.shape[2], x.shape[3]) / 255.0
        return (grey - self.mean) / self.std
