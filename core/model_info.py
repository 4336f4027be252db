"""The model contract: what a deployed model says about itself (labels, preprocessing, decision
threshold and its positive class, provenance).

onnx_export.py writes it as ONNX ``metadata_props`` (string key/value pairs), so a single .onnx file
is self-describing; the engine sidecar carries the same map. Every back-end reads it back into one
typed ModelInfo. Keys are namespaced so they never clash with other tools' metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.input_gate import GatePolicy
from cxr_jetson.core.preprocess import PreprocessSpec

KEY_LABELS = "cxr.labels"
KEY_PREPROCESS = "cxr.preprocess"
KEY_THRESHOLD = "cxr.threshold"
KEY_POSITIVE_CLASS = "cxr.positive_class"
KEY_THRESHOLD_POLICY = "cxr.threshold_policy"
KEY_ARCH = "cxr.arch"
KEY_OUTPUT = "cxr.output"
KEY_PROVENANCE = "cxr.provenance"
KEY_GRAPH_EQUALIZE = "cxr.graph_equalize"
KEY_FOLDED_THRESHOLD = "cxr.folded_threshold"
KEY_GATE = "cxr.gate"
KEY_QUANTIZATION = "cxr.quantization"

_OUTPUT_PROBABILITIES = "softmax probabilities, one per label, in label order"
_OUTPUT_FOLDED = ("softmax probabilities on the decision scale: the positive class's calibrated probability p "
                  "shown as sigmoid(logit p - logit t) with t = cxr.folded_threshold, so 0.5 (argmax) decides as "
                  "p >= t")


@dataclass
class ModelInfo:
    labels: Optional[List[str]] = None
    spec: Optional[PreprocessSpec] = None  # None: not recorded (e.g. a plain jetson-inference export)
    threshold: Optional[float] = None
    positive_class: Optional[str] = None
    threshold_policy: Optional[str] = None
    arch: Optional[str] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    # Preprocessing the network does itself: "hist" when its graph equalises (the spec above is then what
    # the host still does, without equalisation).
    graph_equalize: Optional[str] = None
    # The operating point folded into output_0 (see _OUTPUT_FOLDED); ``threshold`` is then 0.5.
    folded_threshold: Optional[float] = None
    # The input gate's policy when the model computes gate_0 (core/input_gate.py).
    gate: Optional[GatePolicy] = None
    # For an INT8 ONNX (export/quantize.py): its form, calibration and accuracy guard; None for float models.
    quantization: Optional[Dict[str, Any]] = None

    def to_metadata(self) -> Dict[str, str]:
        entries = {
            KEY_LABELS: json.dumps(self.labels),
            KEY_PREPROCESS: (self.spec or PreprocessSpec()).to_json(),
            KEY_OUTPUT: _OUTPUT_FOLDED if self.folded_threshold is not None else _OUTPUT_PROBABILITIES,
            KEY_PROVENANCE: json.dumps(self.provenance, sort_keys=True),
        }
        optional = {KEY_THRESHOLD: self.threshold, KEY_POSITIVE_CLASS: self.positive_class,
                    KEY_THRESHOLD_POLICY: self.threshold_policy, KEY_ARCH: self.arch,
                    KEY_GRAPH_EQUALIZE: self.graph_equalize, KEY_FOLDED_THRESHOLD: self.folded_threshold}
        entries.update({key: str(value) for key, value in optional.items() if value is not None})
        if self.gate is not None:
            entries[KEY_GATE] = self.gate.to_json()
        if self.quantization is not None:
            entries[KEY_QUANTIZATION] = json.dumps(self.quantization, sort_keys=True)
        return entries

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "ModelInfo":
        """Read what is there; a plain jetson-inference ONNX (no metadata) gives the defaults."""
        try:
            labels = json.loads(metadata[KEY_LABELS]) if KEY_LABELS in metadata else None
            spec = (PreprocessSpec.from_dict(json.loads(metadata[KEY_PREPROCESS]))
                    if KEY_PREPROCESS in metadata else None)
            threshold = float(metadata[KEY_THRESHOLD]) if KEY_THRESHOLD in metadata else None
            folded = float(metadata[KEY_FOLDED_THRESHOLD]) if KEY_FOLDED_THRESHOLD in metadata else None
            provenance = json.loads(metadata.get(KEY_PROVENANCE, "{}"))
            quantization = json.loads(metadata[KEY_QUANTIZATION]) if KEY_QUANTIZATION in metadata else None
        except (ValueError, TypeError) as err:
            raise ToolkitError(f"the model's embedded metadata is malformed: {err}") from None
        return cls(labels=labels, spec=spec, threshold=threshold,
                   positive_class=metadata.get(KEY_POSITIVE_CLASS),
                   threshold_policy=metadata.get(KEY_THRESHOLD_POLICY),
                   arch=metadata.get(KEY_ARCH), provenance=provenance,
                   graph_equalize=metadata.get(KEY_GRAPH_EQUALIZE), folded_threshold=folded,
                   gate=GatePolicy.from_json(metadata[KEY_GATE]) if KEY_GATE in metadata else None,
                   quantization=quantization)

