"""Batched training augmentation on cached uint8 images, on whichever device trains.

Every sample gets its own random affine transform (zoom, aspect, rotation, shift, optional mirror)
applied in one ``grid_sample`` call for the whole batch, then brightness, contrast and gamma jitter.
The randomness comes from one torch.Generator whose state is saved in the checkpoint, so a resumed
run continues exactly where the killed one stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edge.preprocess import PreprocessSpec


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple = (0.85, 1.15)        # zoom; >1 zooms in
    aspect: tuple = (0.9, 1.1)
    rotation_degrees: float = 10.0
    translate: float = 0.06           # fraction of the image
    hflip: float = 0.5                # jetson-inference's recipe mirrors too
    brightness: float = 0.08
    contrast: tuple = (0.8, 1.2)
    gamma: tuple = (0.8, 1.25)


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _affine_matrices(count: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    zoom = _uniform(*config.scale, count, generator)
    aspect = _uniform(*config.aspect, count, generator).sqrt()
    angle = _uniform(-config.rotation_degrees, config.rotation_degrees, count, generator) * (math.pi / 180)
    shift = _uniform(-config.translate, config.translate, 2 * count, generator).view(count, 2) * 2
    mirror = torch.where(torch.rand(count, generator=generator) < config.hflip, -1.0, 1.0)
    # affine_grid maps output coordinates to input ones, so zooming in means sampling a smaller area.
    sx, sy = aspect / zoom * mirror, 1.0 / (aspect * zoom)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos * sx, -sin * sy, shift[:, 0]], 1),
                        torch.stack([sin * sx, cos * sy, shift[:, 1]], 1)], 1)


def augment_batch(images: torch.Tensor, spec: PreprocessSpec, config: AugmentConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """uint8 ``B x R x R`` on any device -> augmented, normalised float32 ``B x 3 x R x R``."""
    count, device = images.shape[0], images.device
    grey = images.unsqueeze(1).float().div_(255.0)
    theta = _affine_matrices(count, config, generator).to(device)
    grid = F.affine_grid(theta, list(grey.shape), align_corners=False)
    grey = F.grid_sample(grey, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shape = (count, 1, 1, 1)
    contrast = _uniform(*config.contrast, count, generator).view(shape).to(device)
    brightness = _uniform(-config.brightness, config.brightness, count, generator).view(shape).to(device)
    gamma = _uniform(*config.gamma, count, generator).view(shape).to(device)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    grey = ((grey - mean) * contrast + mean + brightness).clamp_(0.0, 1.0).pow_(gamma)
    return normalize_tensor(grey, spec)


def normalize_tensor(grey: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """float ``B x 1 x R x R`` in [0, 1] -> ImageNet-normalised ``B x 3 x R x R`` (as edge.preprocess.normalize)."""
    mean = torch.tensor(spec.mean, device=grey.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=grey.device).view(1, 3, 1, 1)
    return (grey - mean) / std
