"""INT8 as a quantized ONNX: QuantizeLinear/DequantizeLinear nodes placed by ONNX Runtime's static
quantizer and calibrated on real images through the shared preprocessing (core/preprocess.py).

An explicitly quantized ONNX is the INT8 every runtime now takes: TensorRT 8.5 and 10 build it without a
calibrator, TensorRT 11 and TensorRT-RTX (strongly typed) accept nothing else, and ONNX Runtime runs it on
CPUs. Two forms, because the CPUs differ (``FORMS``):

- ``tensorrt`` (default): signed INT8 activations and weights, symmetric (zero point 0), weights per output
  channel, stored in float behind a Q/DQ pair (TensorRT 8.5 takes no INT8 constants), biases left in float:
  TensorRT's explicit quantization, and ONNX Runtime's fast path on ARM CPUs with dot-product instructions
  (a Jetson Orin's Cortex-A78AE);
- ``x86``: unsigned activations and 7-bit weights (``reduce_range``): ONNX Runtime's fast path on x86 CPUs
  without VNNI, where signed activations ran no faster than FP32 on this project's CPU (the README's
  INT8 section). TensorRT refuses this form (its activations have a zero point).

Left in float: the in-graph equalisation and the input gate (``FLOAT32_SCOPES``: pixel counts and squared
distances, exact only in float), and every layer that writes an output (the probabilities' softmax, the
class activation maps), so the convolutions, the residual additions and the classifier are INT8.
Calibration images default to the training images the model learnt from (never the validation images the
accuracy guard then scores it on).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List

import numpy as np
import onnx
from tqdm import tqdm

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import sha256_file
from cxr_jetson.core.image_files import InputError, expand_input
from cxr_jetson.core.model_info import KEY_QUANTIZATION
from cxr_jetson.core.names import FLOAT32_SCOPES, INPUT_NAME, TOOLKIT, TOOLKIT_VERSION
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, normalize
from cxr_jetson.export.graph import ExportError

FORMS = ("tensorrt", "x86")
METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "Gemm", "Add")
# The x86 form quantizes the ReLUs too, which lets the quantizer fold each into the layer before it:
# unsigned activations with a zero point of 0 clip at zero, which is a ReLU. Otherwise every convolution's
# output is quantized on its own range, dequantized and quantized again on the ReLU's, and those
# 17 requantizations took 12% of the INT8 ResNet-18's time in ONNX Runtime. (Signed activations cannot
# clip at zero, so the quantizer keeps the ReLU and the tensorrt form stays as TensorRT fuses it.)
_OPS = {"tensorrt": QUANTIZED_OPS, "x86": QUANTIZED_OPS + ("Relu",)}


@dataclass(frozen=True)
class Calibration:
    images: np.ndarray  # uint8 N x R x R, as the network sees them before normalisation
    source: str         # the folder they came from
    manifest_sha256: str  # of the sorted relative paths used, so a calibration can be named and repeated
    unreadable: int

    def record(self) -> Dict[str, Any]:
        return {"images": int(len(self.images)), "source": self.source, "manifest_sha256": self.manifest_sha256,
                "unreadable": self.unreadable}


def calibration_images(folder: str, spec: PreprocessSpec, count: int, seed: int = 0) -> Calibration:
    """Up to ``count`` images drawn at random (fixed seed) from ``folder``, decoded and resized as the
    device does; unreadable files are counted and passed over."""
    try:
        paths = [image.path for image in expand_input(folder)[0]]
    except InputError as err:
        raise ExportError(f"--calibration-images: {err}") from None
    if not paths:
        raise ExportError(f"--calibration-images: no images in {folder}")
    chosen = sorted(np.random.default_rng(seed).choice(len(paths), min(count, len(paths)), replace=False))
    images, used = [], []
    for index in tqdm(chosen, desc="calibration images", unit="img", disable=None, leave=False):
        try:
            images.append(load_for_network(paths[index], spec))
        except ToolkitError:
            continue
        used.append(os.path.relpath(paths[index], folder))
    if not images:
        raise ExportError(f"--calibration-images: none of the {len(chosen)} images chosen from {folder} could be read")
    manifest = hashlib.sha256("\n".join(used).encode()).hexdigest()
    return Calibration(np.stack(images), folder, manifest, len(chosen) - len(images))


class _CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol: one normalised image per call, with progress."""

    def __init__(self, images: np.ndarray, spec: PreprocessSpec) -> None:
        self.images, self.spec, self.index = images, spec, 0
        self.progress = tqdm(total=len(images), desc="calibrating", unit="img", disable=None, leave=False)

    def get_next(self):
        if self.index >= len(self.images):
            self.progress.close()
            return None
        self.index += 1
        self.progress.update()
        return {INPUT_NAME: normalize(self.images[self.index - 1], self.spec)}

    def rewind(self) -> None:
        self.index = 0


def float_nodes(graph: onnx.GraphProto) -> List[str]:
    """Nodes kept in float: the FLOAT32_SCOPES and every node that writes a graph output."""
    outputs = {output.name for output in graph.output}
    return [node.name for node in graph.node
            if any(scope in node.name for scope in FLOAT32_SCOPES) or outputs.intersection(node.output)]


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice meant for its own users (pre-processing) on the root logger; ours see progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _settings(form: str) -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType
    # The classifier's logits stay float: rounded to 8 bits, the softmax near the threshold would move.
    shared = {"WeightSymmetric": True, "OpTypesToExcludeOutputQuantization": ["Gemm"]}
    if form == "tensorrt":
        return {"activation_type": QuantType.QInt8, "reduce_range": False,
                # Weights kept float behind a Q/DQ pair: TensorRT 8.x takes no INT8 constants (9.1 added them).
                "extra_options": {**shared, "ActivationSymmetric": True, "QuantizeBias": False,
                                  "AddQDQPairToWeight": True}}
    return {"activation_type": QuantType.QUInt8, "reduce_range": True,
            "extra_options": {**shared, "ActivationSymmetric": False}}


def quantize(fp32_onnx: str, output: str, calibration: Calibration, spec: PreprocessSpec, form: str = "tensorrt",
             method: str = "minmax") -> Dict[str, Any]:
    """Write the INT8 (Q/DQ) copy of ``fp32_onnx`` to ``output`` with its metadata; returns the quantization
    record (form, method, calibration) that ``write_record`` adds once the guard has scored it."""
    if form not in FORMS or method not in METHODS:
        raise ExportError(f"INT8 form {form!r} / method {method!r}: choose from {FORMS} and {METHODS}")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    source = onnx.load(fp32_onnx)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with _quiet_quantizer():
        quantize_static(fp32_onnx, output, _CalibrationReader(calibration.images, spec), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=list(_OPS[form]),
                        nodes_to_exclude=float_nodes(source.graph), calibrate_method=methods[method],
                        **_settings(form))
    _write_metadata(output, {prop.key: prop.value for prop in source.metadata_props})
    return {"form": form, "method": method, "ops": list(_OPS[form]), "calibration": calibration.record(),
            "source": os.path.basename(fp32_onnx), "source_sha256": sha256_file(fp32_onnx)}


def write_record(path: str, record: Dict[str, Any]) -> None:
    """Add the quantization record to the INT8 ONNX's metadata (``ModelInfo.quantization`` reads it)."""
    metadata = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    metadata[KEY_QUANTIZATION] = json.dumps(record, sort_keys=True)
    _write_metadata(path, metadata)


def _write_metadata(path: str, metadata: Dict[str, str]) -> None:
    model = onnx.load(path)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = TOOLKIT, TOOLKIT_VERSION
    onnx.save(model, path)
