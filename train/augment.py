"""Batched training augmentation on cached uint8 images, on whichever device trains.

Every sample gets its own random affine transform (zoom, aspect, rotation, shift, optional mirror)
applied in one ``grid_sample`` call for the whole batch (bilinear, or for a share of batches nearest
point sampling, as jetson-inference's imagenet.py resamples a frame: its aliasing is then something
the network has seen), then, per sample, a blur that stands for a
lower-resolution system, brightness, contrast and gamma jitter and Gaussian noise. Two presets:
``strong`` (the default recipe: the acquisition differences between sites are what a model must
not learn) and ``light`` (small jitter only, this toolkit's earlier default).
The randomness comes from one torch.Generator whose state is saved in the checkpoint, so a resumed
run continues exactly where the killed one stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxr_jetson.core.preprocess import PreprocessSpec


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
    noise: float = 0.0                # largest noise standard deviation, as a fraction of full scale
    blur: float = 0.0                 # probability of the low-resolution blur
    blur_factor: tuple = (1.5, 3.0)   # how many times lower that resolution is
    nearest: float = 0.0              # probability that a batch is resampled by nearest point sampling


AUGMENTATIONS = {
    "light": AugmentConfig(),
    # jetson-inference's RandomResizedCrop (area 0.08-1) zooms up to 3.5x, often onto a patch with no
    # lung in it; a zoom of up to 1.6x keeps the chest while still changing the scale a lot.
    "strong": AugmentConfig(scale=(0.8, 1.6), aspect=(0.75, 1.33), rotation_degrees=15.0, translate=0.1,
                            brightness=0.12, contrast=(0.6, 1.5), gamma=(0.6, 1.7), noise=0.04, blur=0.3,
                            nearest=0.5),
}
DEFAULT_AUGMENTATION = "strong"


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
    # Every random number is drawn on the host from the run's generator first, then sent in two
    # non-blocking copies, so a GPU step never waits for the host or the host for the GPU.
    theta = _affine_matrices(count, config, generator)
    photometric = torch.stack([
        _uniform(*config.contrast, count, generator),
        _uniform(-config.brightness, config.brightness, count, generator),
        _uniform(*config.gamma, count, generator),
        _uniform(0.0, config.noise, count, generator),
        (torch.rand(count, generator=generator) < config.blur).float(),
    ]).view(5, count, 1, 1, 1)
    blur_factor = float(_uniform(*config.blur_factor, 1, generator))
    noise_seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    # Drawn only when used, so a preset without it keeps its random stream.
    resample = "nearest" if config.nearest and float(torch.rand(1, generator=generator)) < config.nearest else "bilinear"
    theta, photometric = _send(theta, device), _send(photometric, device)
    contrast, brightness, gamma, sigma, blurred = photometric

    grey = images.unsqueeze(1).float().div_(255.0)
    grid = F.affine_grid(theta, list(grey.shape), align_corners=False)
    grey = F.grid_sample(grey, grid, mode=resample, padding_mode="zeros", align_corners=False)
    if config.blur > 0:
        grey = torch.where(blurred > 0, _low_resolution(grey, blur_factor), grey)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    grey = ((grey - mean) * contrast + mean + brightness).clamp_(0.0, 1.0).pow_(gamma)
    if config.noise > 0:
        # full-size noise is drawn where the batch lives, from a generator seeded by the run's one
        noise = torch.randn(grey.shape, generator=torch.Generator(device=device).manual_seed(noise_seed),
                            device=device)
        grey = (grey + sigma * noise).clamp_(0.0, 1.0)
    if spec.equalize == "hist":
        grey = equalize_hist(grey)
    return normalize_tensor(grey, spec)


def equalize_hist(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``equalizeHist`` of each image of a float ``B x 1 x R x R`` batch in [0, 1], on its device.

    The augmentations above play a different X-ray machine (exposure, contrast, gamma, noise, blur);
    equalising afterwards, as the device does to every image, means the network trains on exactly the
    kind of input it will get: the global intensity changes are undone, what noise and blur do to the
    histogram stays. (CLAHE has no batched GPU form here, so ``clahe`` models see the changes as drawn.)
    """
    count = grey.shape[0]
    levels = grey.mul(255.0).round_().long().view(count, -1)
    histogram = torch.zeros(count, 256, dtype=torch.float32, device=grey.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    cumulative = histogram.cumsum(1)
    first = histogram.gt(0).float().argmax(1, keepdim=True)  # the darkest grey level present
    darkest = histogram.gather(1, first)
    scale = 255.0 / (levels.shape[1] - darkest).clamp_(min=1.0)
    lookup = ((cumulative - darkest) * scale).round_().clamp_(0.0, 255.0)
    # an image of one grey level keeps it, as in OpenCV
    lookup = torch.where(darkest == levels.shape[1], first.float().expand_as(lookup), lookup)
    return lookup.gather(1, levels).view_as(grey).div_(255.0)


def _send(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor -> ``device``; to a GPU through pinned memory without blocking."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _low_resolution(grey: torch.Tensor, factor: float) -> torch.Tensor:
    """The batch down to 1/factor of its resolution and back up: a blurrier imaging system."""
    side = grey.shape[-1]
    small = F.interpolate(grey, size=max(8, int(side / factor)), mode="bilinear", antialias=True,
                          align_corners=False)
    return F.interpolate(small, size=side, mode="bilinear", align_corners=False)


def normalize_tensor(grey: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """float ``B x 1 x R x R`` in [0, 1] -> ImageNet-normalised ``B x 3 x R x R`` (as core/preprocess.py normalize)."""
    # Python scalars per channel: no small tensor to copy to the GPU on every training step.
    return torch.cat([(grey - mean) / std for mean, std in zip(spec.mean, spec.std)], dim=1)
