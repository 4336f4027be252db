"""An FP16 copy of an FP32 ONNX with float32 inputs and outputs, for strongly typed TensorRT.

TensorRT 11 and TensorRT-RTX take their precision from the network's types: an FP16 engine needs
FP16 weights and activations in the ONNX. The inputs and outputs stay float32 (Cast nodes at the
edges), because the runner and jetson-inference feed float32. The conversion is ONNX Runtime's
maintained FP16 tool (``onnxruntime.transformers``), not hand-made graph surgery; weakly typed
TensorRT (8.x, 10.x: every JetPack so far) never needs it.
"""
from __future__ import annotations

import onnx

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import FLOAT32_SCOPES


def float32_nodes(model: onnx.ModelProto):
    """Names of the nodes that must compute in float32 (the equalisation's pixel counts, the gate's distances)."""
    return [node.name for node in model.graph.node if node.name.startswith(FLOAT32_SCOPES)]


def fp16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute, float32 inputs and outputs, equalisation and gate; metadata kept."""
    try:
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError:
        raise ToolkitError("an FP16 network for this TensorRT needs ONNX Runtime's model tools: "
                           "pip install onnxruntime") from None
    wrapper = OnnxModel(model)
    wrapper.convert_float_to_float16(keep_io_types=True, node_block_list=float32_nodes(model))
    wrapper.topological_sort()  # the converter appends its input Casts after their consumers
    onnx.checker.check_model(wrapper.model)
    return wrapper.model
