"""The architectures train.py offers, how each is built, and where its classification head is.

jetson-inference's ResNet-18 is the default. The others are what published pneumonia notebooks
use, so their recipes can be reproduced with flags: ResNet-34/50, VGG-16 (with and without batch
norm), DenseNet-121, MobileNet-V3, EfficientNet-B0 (torchvision), Xception at 299 px (timm's, when
timm is installed), and a compact 5-block CNN small enough for a Jetson Orin Nano.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torchvision

from cxr_jetson.core.errors import ToolkitError


class ModelError(ToolkitError):
    """An architecture or weights file that cannot be used."""


@dataclass(frozen=True)
class Architecture:
    source: str          # torchvision, timm or builtin
    resolution: int      # default input size
    name: str = ""       # the name in its library, when it differs


ARCHITECTURES: Dict[str, Architecture] = {
    "resnet18": Architecture("torchvision", 224),
    "resnet34": Architecture("torchvision", 224),
    "resnet50": Architecture("torchvision", 224),
    "vgg16": Architecture("torchvision", 224),
    "vgg16_bn": Architecture("torchvision", 224),
    "densenet121": Architecture("torchvision", 224),
    "mobilenet_v3_large": Architecture("torchvision", 224),
    "mobilenet_v3_small": Architecture("torchvision", 224),
    "efficientnet_b0": Architecture("torchvision", 224),
    "xception": Architecture("timm", 299, "legacy_xception"),  # Chollet's original Xception
    "compact_cnn": Architecture("builtin", 128),
}


def architecture(arch: str) -> Architecture:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


class CompactCNN(nn.Module):
    """Five blocks of (3x3 conv + batch norm + ReLU) x 2, max-pool and dropout 0.2, then global
    average pooling and a linear head: about 2.4M parameters and 0.9 GMAC at 128 px.

    Average pooling before the single linear layer makes its class activation maps exact, as for
    ResNets (networks/deployable.py ClassifierWithCam).
    """

    WIDTHS = (32, 64, 128, 256, 256)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        blocks, channels = [], 3
        for width in self.WIDTHS:
            blocks.append(nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Dropout(dropout)))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError("xception comes from timm: pip install timm") from None
    return timm


def new_model(arch: str, pretrained: bool) -> nn.Module:
    """``arch`` with its original head; ImageNet weights when ``pretrained`` (downloaded by its library)."""
    spec = architecture(arch)
    if spec.source == "builtin":
        if pretrained:
            raise ModelError(f"{arch} has no ImageNet weights; train it with --no-pretrained")
        return CompactCNN()
    try:
        if spec.source == "timm":
            return _timm().create_model(spec.name, pretrained=pretrained)
        return torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None)
    except OSError as err:  # URLError and socket errors are OSErrors
        reason = getattr(err, "reason", None) or err.strerror or err
        raise ModelError(f"cannot download ImageNet weights for {arch} ({reason}); pass --weights FILE "
                         "(a state dict) or train from scratch with --no-pretrained") from None


def _classifier(parent: nn.Module, attribute: str, in_features: int, num_classes: int, dropout: float) -> str:
    linear = nn.Linear(in_features, num_classes)
    setattr(parent, attribute, nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear)
    return attribute


def reshape_head(model: nn.Module, num_classes: int, dropout: float = 0.0) -> str:
    """Replace the classifier with one of ``num_classes`` outputs (optionally after dropout), the way
    jetson-inference's reshape_model does for torchvision families; returns the head's module name."""
    if isinstance(model, (torchvision.models.ResNet, CompactCNN)):
        return _classifier(model, "fc", model.fc.in_features, num_classes, dropout)
    if hasattr(model, "get_classifier") and hasattr(model, "reset_classifier"):  # timm
        features = model.get_classifier().in_features
        model.reset_classifier(num_classes)
        name = next(n for n, m in model.named_children() if m is model.get_classifier())
        return _classifier(model, name, features, num_classes, dropout)
    if isinstance(getattr(model, "classifier", None), nn.Linear):  # densenet
        return _classifier(model, "classifier", model.classifier.in_features, num_classes, dropout)
    if isinstance(getattr(model, "classifier", None), nn.Sequential):  # vgg, mobilenet, efficientnet
        index = max(i for i, layer in enumerate(model.classifier) if isinstance(layer, nn.Linear))
        _classifier(model.classifier, str(index), model.classifier[index].in_features, num_classes, dropout)
        return f"classifier.{index}"
    raise ModelError(f"do not know how to reshape the head of {type(model).__name__}")


def final_linear(module: nn.Module) -> Optional[nn.Linear]:
    """The Linear layer of a head (a plain Linear, or Dropout + Linear)."""
    if isinstance(module, nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)] if isinstance(module, nn.Sequential) else []
    return linears[-1] if linears else None


def head_name(model: nn.Module) -> str:
    """Where reshape_head put the classification head (the module --freeze-backbone leaves trainable)."""
    if isinstance(model, (torchvision.models.ResNet, CompactCNN)):
        return "fc"
    if hasattr(model, "get_classifier"):
        return next(n for n, m in model.named_children() if m is model.get_classifier())
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential):
        index = max(i for i, layer in enumerate(classifier) if final_linear(layer) is not None)
        return f"classifier.{index}"
    if classifier is not None:
        return "classifier"
    raise ModelError(f"do not know where the head of {type(model).__name__} is")
