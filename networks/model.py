"""Build a classifier with a new head, from ImageNet weights, a local file, or scratch; reload a trained one."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from cxr_jetson.networks.architectures import ModelError, final_linear, head_name, new_model, reshape_head
from cxr_jetson.networks.checkpoint import load_checkpoint_file


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


def model_classes(model: nn.Module) -> int:
    """How many classes the model's head outputs."""
    return final_linear(model.get_submodule(head_name(model))).out_features
