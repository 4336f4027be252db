"""The network as it is deployed, carrying its own decision: equalisation, classifier, probabilities,
and class activation maps from the same pass.

One builder, ``deployment``, used by the ONNX export, the torch back-end and the GPU benchmark, so every
one of them runs the same network:
- a ``hist`` model equalises its input in the graph (networks/equalize.py), so a runtime that feeds
  plain normalised RGB, jetson-inference's imagenet.py among them, gives it what it was trained on;
  the host then does not equalise (the deployment's spec says so), and nothing equalises twice;
- a two-class model with a decision threshold t has it folded into the positive class's bias, so the
  softmax output is sigmoid(logit p - logit t) and argmax (0.5) decides exactly as p >= t; a runtime
  that decides by argmax (imagenet.py) decides as classify.py does, and the confidence it shows is
  that decision-scale probability: 50% at the operating point, above 50% for the class decided;
- softmax probabilities (sigmoid for a multi-label model, as jetson-inference's exporter does), plus
  the ``cam_0`` maps where the architecture allows them;
- for a model with a fitted input gate, its scores as the last output ``gate_0`` (networks/input_gate.py).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torchvision

from cxr_jetson.core.decision import DEFAULT_THRESHOLD, positive_index
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import CAM_NAME, GATE_NAME, OUTPUT_NAME
from cxr_jetson.networks.architectures import CompactCNN, ModelError, final_linear, head_name
from cxr_jetson.networks.checkpoint import model_info
from cxr_jetson.networks.equalize import EqualizeHist
from cxr_jetson.networks.input_gate import GateScores, GateStatistics
from cxr_jetson.networks.model import model_from_checkpoint


class ClassifierWithCam(nn.Module):
    """Softmax probabilities and class activation maps from one forward pass.

    For a network ending in global average pooling and one linear layer (ResNets, the compact CNN)
    the map of class c is that layer's weights for c applied at every position of the last feature
    map: averaging it over the positions and adding the bias gives exactly the logit of c, so the map
    shows where that logit comes from. It is a 1x1 convolution over the features, exported as a second
    ONNX output (``cam_0``) beside ``output_0``.
    """

    def __init__(self, model: nn.Module, with_cam: bool = True) -> None:
        super().__init__()
        self.with_cam = with_cam  # False: only the gate needs the features (forward still gives the maps)
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

    def parts(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Probabilities, class activation maps, pooled features and logits, from one pass."""
        features = self._features(x)
        m = self.model
        pooled = torch.flatten(m.pool(features) if isinstance(m, CompactCNN) else m.avgpool(features), 1)
        logits = m.fc(pooled)
        return torch.softmax(logits, dim=1), self.cam(features), pooled, logits

    def forward(self, x: torch.Tensor):
        probabilities, cam, _, _ = self.parts(x)
        return probabilities, cam


def supports_cam(model: nn.Module) -> bool:
    """torchvision ResNets (resnet*, resnext*, wide_resnet*) and the compact CNN: the layouts read above."""
    return isinstance(model, (torchvision.models.ResNet, CompactCNN))


def _classifier(model: nn.Module, multi_label: bool, cam: bool, gated: bool) -> Tuple[nn.Module, Tuple[str, ...]]:
    """``model`` with its activation, and the names of its outputs: probabilities (``output_0``), then the
    class activation maps (``cam_0``) when ``cam`` and the model allows, then the gate's scores (``gate_0``)."""
    if gated:
        return ClassifierWithCam(model, with_cam=cam), (OUTPUT_NAME,) + ((CAM_NAME,) if cam else ()) + (GATE_NAME,)
    if cam and supports_cam(model) and not multi_label:
        return ClassifierWithCam(model), (OUTPUT_NAME, CAM_NAME)
    activation = nn.Sigmoid() if multi_label else nn.Softmax(dim=1)
    return nn.Sequential(model, activation), (OUTPUT_NAME,)


def gate_applies(model: nn.Module, multi_label: bool) -> bool:
    """The gate reads pooled features and logits: single-label networks whose head those layouts allow."""
    return supports_cam(model) and not multi_label


class DeployedNetwork(nn.Module):
    """The input equalised when the model was trained on equalised images, then the classifier, and the
    input gate's scores (networks/input_gate.py) as a last output when the model has a gate."""

    def __init__(self, classifier: nn.Module, equalize: Optional[EqualizeHist],
                 gate: Optional[GateScores] = None) -> None:
        super().__init__()
        self.equalize = equalize  # its name gives the ONNX nodes the scope engines keep in float32 (FLOAT32_SCOPES)
        self.classifier = classifier
        self.gate = gate  # named for its float32 scope too

    def forward(self, x: torch.Tensor):
        seen = x if self.equalize is None else self.equalize(x)
        if self.gate is None:
            return self.classifier(seen)
        probabilities, cam, pooled, logits = self.classifier.parts(seen)
        outputs = (probabilities, cam) if self.classifier.with_cam else (probabilities,)
        return outputs + (self.gate(x, seen, pooled, logits),)


@dataclass
class Deployment:
    network: nn.Module            # in eval mode; takes the host's normalised RGB
    outputs: Tuple[str, ...]      # output names, output_0 first
    info: ModelInfo               # what the deployed network records: its host preprocessing, its decision


def _fold_threshold(model: nn.Module, positive: int, threshold: float) -> nn.Module:
    """A copy of ``model`` whose positive logit is lowered by logit(threshold) (see the module docstring)."""
    folded = copy.deepcopy(model)
    layer = final_linear(folded.get_submodule(head_name(folded)))
    if layer is None or layer.bias is None:
        raise ModelError(f"{type(model).__name__} has no final linear layer with a bias to fold the threshold into")
    with torch.no_grad():
        layer.bias[positive] -= math.log(threshold / (1.0 - threshold))
    return folded


def deployment(checkpoint: Dict[str, Any], cam: bool = True, provenance: Optional[Dict[str, Any]] = None,
               fold: bool = True, gate: Optional[GateStatistics] = None) -> Deployment:
    """The network of a training checkpoint as every runtime deploys it (see the module docstring);
    ``fold=False`` keeps output_0 as the calibrated probabilities and the threshold in the metadata;
    ``gate``: the input gate's statistics, computed in the graph as a last output (``gate_0``)."""
    info = model_info(checkpoint, provenance or {})
    model, multi_label = model_from_checkpoint(checkpoint), bool(checkpoint.get("multi_label"))
    if gate is not None and not gate_applies(model, multi_label):
        raise ModelError(f"the input gate needs a single-label ResNet or compact CNN, not {checkpoint.get('arch')}")
    spec = info.spec
    equalize = EqualizeHist(spec.mean, spec.std) if spec.equalize == "hist" else None
    if equalize is not None:
        info = dataclasses.replace(info, spec=dataclasses.replace(spec, equalize="none"), graph_equalize="hist")
    positive = positive_index(info.labels, info.positive_class)
    if fold and positive is not None and info.threshold is not None and 0.0 < info.threshold < 1.0 and not multi_label:
        model = _fold_threshold(model, positive, info.threshold)
        info = dataclasses.replace(info, threshold=DEFAULT_THRESHOLD, folded_threshold=info.threshold)
    classifier, outputs = _classifier(model, multi_label, cam and supports_cam(model), gate is not None)
    scores = None
    if gate is not None:
        scores = GateScores(gate, spec.mean, spec.std)
        info = dataclasses.replace(info, gate=gate.policy)
    return Deployment(DeployedNetwork(classifier, equalize, scores).eval(), outputs, info)
