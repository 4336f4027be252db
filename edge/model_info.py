"""What a deployed model says about itself: labels, preprocessing, decision threshold, provenance.

onnx_export.py writes these as ONNX ``metadata_props`` (string key/value pairs), so a single .onnx file
is self-describing; back-ends hand the same map back here. Keys are namespaced so they never clash
with other tools' metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from edge.cli import ToolkitError
from edge.preprocess import PreprocessSpec

KEY_LABELS = "cxr.labels"
KEY_PREPROCESS = "cxr.preprocess"
KEY_THRESHOLD = "cxr.threshold"
KEY_POSITIVE_CLASS = "cxr.positive_class"
KEY_THRESHOLD_POLICY = "cxr.threshold_policy"
KEY_ARCH = "cxr.arch"
KEY_OUTPUT = "cxr.output"
KEY_PROVENANCE = "cxr.provenance"

DEFAULT_POSITIVE_CLASS = "PNEUMONIA"
# The optional second output: class activation maps [N, C, h, w] from the same inference.
CAM_OUTPUT = "cam_0"


@dataclass
class ModelInfo:
    labels: Optional[List[str]] = None
    spec: Optional[PreprocessSpec] = None  # None: not recorded (e.g. a plain jetson-inference export)
    threshold: Optional[float] = None
    positive_class: Optional[str] = None
    threshold_policy: Optional[str] = None
    arch: Optional[str] = None
    provenance: Dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> Dict[str, str]:
        entries = {
            KEY_LABELS: json.dumps(self.labels),
            KEY_PREPROCESS: (self.spec or PreprocessSpec()).to_json(),
            KEY_OUTPUT: "softmax probabilities, one per label, in label order",
            KEY_PROVENANCE: json.dumps(self.provenance, sort_keys=True),
        }
        optional = {KEY_THRESHOLD: self.threshold, KEY_POSITIVE_CLASS: self.positive_class,
                    KEY_THRESHOLD_POLICY: self.threshold_policy, KEY_ARCH: self.arch}
        entries.update({key: str(value) for key, value in optional.items() if value is not None})
        return entries

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> "ModelInfo":
        """Read what is there; a plain jetson-inference ONNX (no metadata) gives the defaults."""
        try:
            labels = json.loads(metadata[KEY_LABELS]) if KEY_LABELS in metadata else None
            spec = (PreprocessSpec.from_dict(json.loads(metadata[KEY_PREPROCESS]))
                    if KEY_PREPROCESS in metadata else None)
            threshold = float(metadata[KEY_THRESHOLD]) if KEY_THRESHOLD in metadata else None
            provenance = json.loads(metadata.get(KEY_PROVENANCE, "{}"))
        except (ValueError, TypeError) as err:
            raise ToolkitError(f"the model's embedded metadata is malformed: {err}") from None
        return cls(labels=labels, spec=spec, threshold=threshold,
                   positive_class=metadata.get(KEY_POSITIVE_CLASS),
                   threshold_policy=metadata.get(KEY_THRESHOLD_POLICY),
                   arch=metadata.get(KEY_ARCH), provenance=provenance)


def default_positive_class(classes: List[str]) -> Optional[str]:
    """The class a two-class model's threshold applies to: PNEUMONIA if present, else the second."""
    if len(classes) != 2:
        return None
    return DEFAULT_POSITIVE_CLASS if DEFAULT_POSITIVE_CLASS in classes else classes[1]


def positive_index(labels: List[str], positive_class: Optional[str]) -> Optional[int]:
    """Index of the class the decision threshold applies to, or None to decide by argmax.

    A threshold only makes sense for a two-class model; the positive class is the one named in the
    model (PNEUMONIA by default).
    """
    if len(labels) != 2:
        return None
    name = positive_class or DEFAULT_POSITIVE_CLASS
    return labels.index(name) if name in labels else None
