"""The in-graph equalisation done by OpenCV on the host, and the rest of the graph run from its output.

A ``hist`` model equalises its own input (networks/equalize.py), so that jetson-inference's imagenet.py and
TensorRT get what the model was trained on. On a GPU those layers cost little; on a CPU they are a quarter
of ResNet-18's time in ONNX Runtime (a histogram built from comparisons and matrix products, because
TensorRT parses no scatter or cumulative sum), while ``cv2.equalizeHist`` does the same in microseconds.
The layers reproduce OpenCV's lookup table exactly (tests/test_jetson_workflow.py), so the host computes the
tensor that leaves the equalisation scope and feeds the graph from there: the same numbers, bit for bit
(tests/test_host_equalize.py), at a fraction of the cost. The ONNX file is not changed.

Needs the ``onnx`` package to cut the graph; without it, or for a graph whose equalisation does not end
in one tensor, ``split_at_equalisation`` returns None and the whole graph runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np

from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import INPUT_NAME

_SCOPE = "/equalize/"
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# networks/equalize.py's grey weights (OpenCV's BT.601), used the way the graph uses them.
_GREY_WEIGHTS = np.asarray((0.299, 0.587, 0.114), np.float32).reshape(1, 3, 1, 1)


@dataclass(frozen=True)
class EqualisationSplit:
    trunk: bytes                # the serialised graph from the equalisation's output to the model's outputs
    boundary: str               # the tensor the equalisation ends in: N x 3 x R x R, equalised and normalised
    needs_input: bool           # the trunk still reads input_0 itself (the input gate's grey-level spread)
    mean: np.ndarray            # 1 x 3 x 1 x 1 float32, the model's normalisation
    std: np.ndarray

    def feeds(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """The trunk's inputs for a normalised RGB batch (``N x 3 x R x R`` float32)."""
        equalised = host_equalized(batch, self.mean, self.std)
        return {INPUT_NAME: batch, self.boundary: equalised} if self.needs_input else {self.boundary: equalised}


def host_equalized(batch: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """What networks/equalize.py's layers output for ``batch``, by OpenCV: the grey level of each pixel,
    ``cv2.equalizeHist``, normalised again into all three channels (float32 throughout, in the graph's order)."""
    grey = ((batch * std + mean) * _GREY_WEIGHTS).sum(axis=1)
    levels = np.clip(np.rint(grey * np.float32(255.0)), 0, 255).astype(np.uint8)
    equalised = np.stack([cv2.equalizeHist(image) for image in levels])
    scaled = equalised.astype(np.float32)[:, None] / np.float32(255.0)
    return np.ascontiguousarray((scaled - mean) / std)


def _in_scope(node) -> bool:
    # ONNX Runtime's quantizer names the Q/DQ pair after the tensor it quantizes, so the pair on the
    # equalisation's output carries its scope, but it belongs to the quantized network after it.
    return node.name.startswith(_SCOPE) and node.op_type not in _QDQ


def _boundary(nodes) -> Optional[str]:
    """The one tensor made inside the equalisation and read outside it, or None."""
    made_inside = {output for node in nodes if _in_scope(node) for output in node.output}
    crossing = {name for node in nodes if not _in_scope(node) for name in node.input if name in made_inside}
    return crossing.pop() if len(crossing) == 1 else None


def split_at_equalisation(model_file: str) -> Optional[EqualisationSplit]:
    """The graph of a ``hist`` model without its equalisation, or None for any other model and where the
    graph cannot be cut or read (see the module docstring; ONNX Runtime then reports a file it cannot read)."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
        from onnx.utils import Extractor
    except ImportError:
        return None
    try:
        model = onnx.load(model_file)
    except (OSError, DecodeError):
        return None
    info = ModelInfo.from_metadata({prop.key: prop.value for prop in model.metadata_props})
    nodes = model.graph.node
    boundary = _boundary(nodes)
    if (info.graph_equalize != "hist" or info.spec is None or boundary is None
            or model.graph.input[0].name != INPUT_NAME):
        return None
    needs_input = any(INPUT_NAME in node.input for node in nodes if not _in_scope(node))
    outputs = [output.name for output in model.graph.output]
    inputs = ([INPUT_NAME] if needs_input else []) + [boundary]
    # The cut needs the boundary's type, which is the input's (normalised RGB in, normalised RGB out):
    # declared here rather than by shape inference over the whole graph, a sixth of the runner's start-up.
    boundary_type = onnx.ValueInfoProto()
    boundary_type.CopyFrom(model.graph.input[0])
    boundary_type.name = boundary
    model.graph.value_info.append(boundary_type)
    trunk = Extractor(model).extract_model(inputs, outputs)
    # Extractor keeps only the opset imports and metadata of a new model: carry the original's over.
    del trunk.metadata_props[:]
    trunk.metadata_props.extend(model.metadata_props)
    return EqualisationSplit(trunk.SerializeToString(), boundary, needs_input,
                             np.asarray(info.spec.mean, np.float32).reshape(1, 3, 1, 1),
                             np.asarray(info.spec.std, np.float32).reshape(1, 3, 1, 1))
