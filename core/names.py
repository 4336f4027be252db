"""The names two parts of the toolkit must agree on, written once: tensor names, file names, the
default model folder, engine precisions and the toolkit's version.

The tensor and file names are jetson-inference's, so its tools read what this toolkit writes.
"""
from __future__ import annotations

import os

from cxr_jetson import __version__

TOOLKIT = "cxr-jetson"
TOOLKIT_VERSION = __version__

# The ONNX / engine contract (jetson-inference's names): float32 [N, 3, R, R] in, [N, C] probabilities out.
INPUT_NAME = "input_0"
OUTPUT_NAME = "output_0"
# The optional second output: class activation maps [N, C, h, w] from the same inference.
CAM_NAME = "cam_0"
# The optional last output: the input gate's scores [N, G] (core/input_gate.py GATE_COLUMNS).
GATE_NAME = "gate_0"

# Files in a model folder.
BEST_CHECKPOINT = "model_best.pth.tar"
LAST_CHECKPOINT = "checkpoint.pth.tar"
LABELS_FILE = "labels.txt"
MODEL_CARD = "MODEL_CARD.md"

# Where models live when none is named; $NET is the variable jetson-inference's docs use for it.
DEFAULT_MODEL_DIR = os.path.join("models", "pneumonia")
MODEL_DIR_VARIABLE = "NET"

# The ONNX node-name scopes engines keep in float32: the in-graph equalisation (networks/equalize.py), whose
# pixel counts reach R x R, exact only in float32; the input gate (networks/input_gate.py), whose squared
# distances grow with how far out of scope an input is, past FP16's range. Tiny layers either way.
FLOAT32_SCOPES = ("/equalize/", "/gate/")

# The INT8 ONNX export/quantize.py writes beside the FP32 one: <arch>.int8.onnx.
INT8_ONNX_SUFFIX = ".int8.onnx"

# TensorRT engine precisions, the default first.
PRECISIONS = ("fp16", "fp32", "int8")
