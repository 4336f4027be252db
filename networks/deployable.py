"""The network as it is deployed: class probabilities, and class activation maps from the same pass.

One builder, ``deployable``, used by the ONNX export, the torch back-end and the GPU benchmark, so
every one of them runs the same wrapper: softmax probabilities (sigmoid for a multi-label model, as
jetson-inference's exporter does), plus the ``cam_0`` maps where the architecture allows them.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torchvision

from cxr_jetson.core.names import CAM_NAME, OUTPUT_NAME
from cxr_jetson.networks.architectures import CompactCNN, ModelError, final_linear


class ClassifierWithCam(nn.Module):
    """Softmax probabilities and class activation maps from one forward pass.

    For a network ending in global average pooling and one linear layer (ResNets, the compact CNN)
    the map of class c is that layer's weights for c applied at every position of the last feature
    map: averaging it over the positions and adding the bias gives exactly the logit of c, so the map
    shows where that logit comes from. It is a 1x1 convolution over the features, exported as a second
    ONNX output (``cam_0``) beside ``output_0``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not supports_cam(model):
            raise ModelError(f"{type(model).__name__} has no global-average-pool + linear head to take a CAM from")
        self.model = model
        weight = final_linear(model.fc).weight.detach()
        self.cam = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=False)
        self.cam.weight = nn.Parameter(weight[:, :, None, None].clone(), requires_grad=False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if isinstance(m, CompactCNN):
            return m.forward_features(x)
        return m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))

    def forward(self, x: torch.Tensor):
        features = self._features(x)
        m = self.model
        logits = m.forward_head(features) if isinstance(m, CompactCNN) else m.fc(torch.flatten(m.avgpool(features), 1))
        return torch.softmax(logits, dim=1), self.cam(features)


def supports_cam(model: nn.Module) -> bool:
    """torchvision ResNets (resnet*, resnext*, wide_resnet*) and the compact CNN: the layouts read above."""
    return isinstance(model, (torchvision.models.ResNet, CompactCNN))


def deployable(model: nn.Module, multi_label: bool = False, cam: bool = True) -> Tuple[nn.Module, Tuple[str, ...]]:
    """``model`` wrapped as it is deployed, in eval mode, and the names of its outputs: probabilities
    (``output_0``), then the class activation maps (``cam_0``) when ``cam`` and the model allows."""
    if cam and supports_cam(model) and not multi_label:
        return ClassifierWithCam(model).eval(), (OUTPUT_NAME, CAM_NAME)
    activation = nn.Sigmoid() if multi_label else nn.Softmax(dim=1)
    return nn.Sequential(model, activation).eval(), (OUTPUT_NAME,)
