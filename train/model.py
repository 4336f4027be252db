"""Build a torchvision classifier with a new head, from ImageNet weights, a local file, or scratch."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torchvision
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from edge.cli import ToolkitError
from train.checkpoint import load_checkpoint_file


class ModelError(ToolkitError):
    """An architecture or weights file that cannot be used."""


def reshape_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier with one of ``num_classes`` outputs (jetson-inference's reshape_model)."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):  # resnet, resnext, wide_resnet, regnet
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif isinstance(getattr(model, "classifier", None), nn.Linear):  # densenet
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    elif isinstance(getattr(model, "classifier", None), nn.Sequential):  # vgg, alexnet, mobilenet, efficientnet
        index = max(i for i, layer in enumerate(model.classifier) if isinstance(layer, (nn.Linear, nn.Conv2d)))
        layer = model.classifier[index]
        if isinstance(layer, nn.Conv2d):  # squeezenet
            model.classifier[index] = nn.Conv2d(layer.in_channels, num_classes, kernel_size=1)
        else:
            model.classifier[index] = nn.Linear(layer.in_features, num_classes)
    else:
        raise ModelError(f"do not know how to reshape the head of {type(model).__name__}")
    return model


def _new_model(arch: str, pretrained: bool) -> nn.Module:
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"unknown architecture {arch!r}; choose a torchvision classification model "
                         "such as resnet18, resnet50, densenet121 or mobilenet_v3_large")
    if not pretrained:
        return torchvision.models.get_model(arch, weights=None)
    try:
        return torchvision.models.get_model(arch, weights="DEFAULT")
    except OSError as err:  # URLError and socket errors are OSErrors
        reason = getattr(err, "reason", None) or err.strerror or err
        raise ModelError(f"cannot download ImageNet weights for {arch} ({reason}); pass --weights FILE "
                         "(a torchvision state dict) or train from scratch with --no-pretrained") from None


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Tensors from a torchvision .pth state dict or a training checkpoint, loaded safely."""
    data = load_checkpoint_file(path)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no state dict of tensors")
    state = dict(state)
    consume_prefix_in_state_dict_if_present(state, "module.")  # saved from DataParallel/DDP
    return state


def _load_backbone(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor whose name and shape match; a differently sized head is skipped."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if len(usable) < len(own) // 2:
        raise ModelError(f"{source} does not fit this architecture ({len(usable)} of {len(own)} tensors match)")
    model.load_state_dict(usable, strict=False)
    if missing:
        print(f"=> weights from {source}: {len(usable)} tensors loaded, {len(missing)} left at their "
              f"initial values ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")


def build_model(arch: str, num_classes: int, pretrained: bool = False, weights: Optional[str] = None) -> nn.Module:
    """``arch`` with a ``num_classes`` head; ImageNet weights when ``pretrained``, or those of ``weights``."""
    model = _new_model(arch, pretrained and not weights)
    if weights:
        _load_backbone(model, read_state_dict(weights), weights)
    return reshape_head(model, num_classes)


def load_trained(arch: str, num_classes: int, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """A model for inference or export from a checkpoint's state dict (strict: every tensor must fit)."""
    model = reshape_head(_new_model(arch, pretrained=False), num_classes)
    state = dict(state_dict)
    consume_prefix_in_state_dict_if_present(state, "module.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"checkpoint weights do not fit {arch} with {num_classes} classes: "
                         f"{str(err).splitlines()[0]}") from None
    return model


class ClassifierWithCam(nn.Module):
    """Softmax probabilities and class activation maps from one forward pass.

    For a ResNet (global average pool + linear head) the map of class c is the head's weights for c
    applied at every position of the last feature map: averaging it over the positions and adding
    the bias gives exactly the logit of c, so the map shows where that logit comes from. It is a 1x1
    convolution over the features, exported as a second ONNX output (``cam_0``) beside ``output_0``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not supports_cam(model):
            raise ModelError(f"{type(model).__name__} has no global-average-pool + linear head to take a CAM from")
        self.model = model
        weight = model.fc.weight.detach()
        self.cam = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=False)
        self.cam.weight = nn.Parameter(weight[:, :, None, None].clone(), requires_grad=False)

    def forward(self, x: torch.Tensor):
        m = self.model
        features = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
        logits = m.fc(torch.flatten(m.avgpool(features), 1))
        return torch.softmax(logits, dim=1), self.cam(features)


def supports_cam(model: nn.Module) -> bool:
    """torchvision ResNets (resnet*, resnext*, wide_resnet*): the layout ClassifierWithCam reads."""
    return isinstance(model, torchvision.models.ResNet)
