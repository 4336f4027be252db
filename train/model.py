"""Build a classifier with a new head, from ImageNet weights, a local file, or scratch; reload a trained one."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torchvision
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from train.architectures import CompactCNN, ModelError, final_linear, head_name, new_model, reshape_head
from train.checkpoint import load_checkpoint_file


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


def build_model(arch: str, num_classes: int, pretrained: bool = False, weights: Optional[str] = None,
                head_dropout: float = 0.0) -> nn.Module:
    """``arch`` with a ``num_classes`` head; ImageNet weights when ``pretrained``, or those of ``weights``."""
    model = new_model(arch, pretrained and not weights)
    if weights:
        _load_backbone(model, read_state_dict(weights), weights)
    reshape_head(model, num_classes, head_dropout)
    return model


def model_from_checkpoint(checkpoint: Dict[str, Any]) -> nn.Module:
    """The trained model of a checkpoint, for inference or export (strict: every tensor must fit)."""
    arch, num_classes = checkpoint["arch"], int(checkpoint["num_classes"])
    model = new_model(arch, pretrained=False)
    reshape_head(model, num_classes, float(checkpoint.get("head_dropout") or 0.0))
    state = dict(checkpoint["state_dict"])
    consume_prefix_in_state_dict_if_present(state, "module.")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"checkpoint weights do not fit {arch} with {num_classes} classes: "
                         f"{str(err).splitlines()[0]}") from None
    return model.eval()


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


def model_classes(model: nn.Module) -> int:
    """How many classes the model's head outputs."""
    return final_linear(model.get_submodule(head_name(model))).out_features
