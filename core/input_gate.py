"""The input gate's rule: which inputs the model may answer for, and when its answer is REFER.

A screening model answers for frontal chest X-rays like those it was trained on. Everything else (a
photo, a document, a blank frame, noise, an inverted or rotated film, a thumbnail) gets NOT ASSESSED
with its reason instead of a class, and an answer too close to the threshold gets REFER. The checks,
in the order they are applied (the first that fails names the reason):

| check | where it runs | refused when |
|---|---|---|
| too few pixels | host, on the decoded frame | its short side is under half the network resolution |
| colour | host, on the decoded frame (a grey network input has lost it) | colourfulness (Hasler and Suesstrunk) above ``max_colourfulness`` |
| nearly constant | in the ONNX (``gate_0``) | grey-level standard deviation under ``min_grey_std`` |
| inverted or rotated | in the ONNX | the 16 x 16 layout of the equalised image matches an inverted or rotated copy of the training images' mean layout better than the upright one, by more than the margin chosen on in-scope images |
| not like the training images | in the ONNX | Mahalanobis distance of the pooled features to the nearest class (shared covariance, statistics of the training images) above the threshold chosen for the target false-refusal rate |
| REFER | host, on output_0 | the decision-scale probability lies inside the band around 50% chosen on validation |

A DICOM's header is checked too (core/dicom_gate.py). The rule's parameters are fitted on the
training images (train/input_gate.py) and travel in the ONNX metadata (``cxr.gate``); the scores come
from the ONNX's third output, ``gate_0``, with the columns of ``GATE_COLUMNS``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from cxr_jetson.core.decision import Prediction
from cxr_jetson.core.errors import ToolkitError

GATE_COLUMNS = ("mahalanobis", "energy", "layout_upright", "layout_rot90", "layout_rot180", "layout_rot270",
                "grey_std")
_COLUMN = {name: index for index, name in enumerate(GATE_COLUMNS)}

STATUS_DECIDED = "ok"
STATUS_REFER = "refer"
STATUS_NOT_ASSESSED = "not_assessed"
NOT_A_CHEST_XRAY = "not a chest X-ray"


@dataclass(frozen=True)
class GatePolicy:
    """The gate's thresholds, as fitted on a model's training and validation images."""

    mahalanobis: float              # refuse above (mean squared standardised distance per feature)
    layout_margin: float            # refuse when upright layout beats every alternative by less than this
    min_grey_std: float = 4.0       # grey levels: below, the frame is nearly constant
    max_colourfulness: float = 15.0  # Hasler-Suesstrunk M: about 0 for grey, above 15 for visibly coloured
    min_side_fraction: float = 0.5  # of the network resolution
    refer_band: Tuple[float, float] = (0.5, 0.5)  # decision-scale probabilities; (0.5, 0.5): no band
    age_range_years: Optional[Tuple[float, float]] = None  # the training population, for DICOM ages
    fitted: Dict[str, Any] = field(default_factory=dict)  # how the thresholds were chosen, with figures

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GatePolicy":
        try:
            values = json.loads(text)
            values["refer_band"] = tuple(values.get("refer_band", (0.5, 0.5)))
            if values.get("age_range_years") is not None:
                values["age_range_years"] = tuple(values["age_range_years"])
            return cls(**values)
        except (ValueError, TypeError) as err:
            raise ToolkitError(f"the model's input gate record (cxr.gate) is malformed: {err}") from None


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of a BGR image (0 for any grey image); sampled on a grid of
    at most about 128 x 128 pixels, which is plenty for a whole-image statistic."""
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    step = max(1, max(image.shape[:2]) // 128)
    sample = image[::step, ::step, :3].astype(np.float32)
    blue, green, red = sample[..., 0], sample[..., 1], sample[..., 2]
    red_green, yellow_blue = red - green, 0.5 * (red + green) - blue
    spread = math.hypot(float(red_green.std()), float(yellow_blue.std()))
    return spread + 0.3 * math.hypot(float(red_green.mean()), float(yellow_blue.mean()))


def frame_refusal(shape: Sequence[int], colour: float, resolution: int, policy: GatePolicy) -> Optional[str]:
    """What the host can see and the network input has lost: the frame's size and its colour."""
    short_side = min(shape[:2])
    if short_side < policy.min_side_fraction * resolution:
        return f"too small ({shape[1]}x{shape[0]} px)"
    if colour > policy.max_colourfulness:
        return "colour image, not a grey X-ray"
    return None


def layout_margin(scores: np.ndarray) -> Tuple[float, str]:
    """How much better the upright layout fits than the best alternative (an inverted image matches the
    negated template, a rotated one a rotated template), and the reason to give when that is too little:
    the alternative when it fits better than upright, else that the image is not laid out like one."""
    upright = float(scores[_COLUMN["layout_upright"]])
    alternatives = {"inverted (negative) image": -upright}
    for degrees in (90, 180, 270):
        value = float(scores[_COLUMN[f"layout_rot{degrees}"]])
        alternatives[f"rotated image ({degrees} degrees)"] = abs(value)  # |.|: rotated and inverted too
    best = max(alternatives, key=alternatives.get)
    margin = upright - alternatives[best]
    return margin, (best if margin < 0 else "not laid out like a frontal chest X-ray")


def score_refusal(scores: np.ndarray, policy: GatePolicy) -> Optional[str]:
    """The in-graph checks on one row of ``gate_0``, in order; None: in scope."""
    if not scores[_COLUMN["grey_std"]] >= policy.min_grey_std:  # "not >=": a NaN is refused too
        return "blank frame"
    margin, alternative = layout_margin(scores)
    if not margin >= policy.layout_margin:
        return alternative
    if not scores[_COLUMN["mahalanobis"]] <= policy.mahalanobis:
        return NOT_A_CHEST_XRAY
    return None


def in_refer_band(decision_probability: float, policy: GatePolicy) -> bool:
    """True when the positive class's decision-scale probability lies strictly inside the REFER band."""
    low, high = policy.refer_band
    return low < decision_probability < high


def parse_age_range(text: str) -> Tuple[float, float]:
    """``"1-5"`` -> (1.0, 5.0): the patient ages in years a model's training images span."""
    try:
        low, high = (float(part) for part in text.split("-"))
    except ValueError:
        raise ToolkitError(f"--population-age {text!r}: expected LO-HI in years, e.g. 1-5") from None
    if not 0 <= low <= high:
        raise ToolkitError(f"--population-age {text!r}: expected 0 <= LO <= HI")
    return low, high


@dataclass(frozen=True)
class Verdict:
    """What the runner answers for one input: a class, REFER, or NOT ASSESSED with its reason."""

    status: str                              # STATUS_DECIDED, STATUS_REFER or STATUS_NOT_ASSESSED
    prediction: Optional[Prediction] = None  # None when not assessed: no class is shown for such input
    reason: str = ""
    scores: Optional[np.ndarray] = None      # the row of gate_0, when the model has a gate
    warnings: Tuple[str, ...] = ()

    def text(self) -> str:
        if self.status == STATUS_NOT_ASSESSED:
            return f"NOT ASSESSED: {self.reason}"
        if self.status == STATUS_REFER:
            return f"REFER ({self.prediction.text()})"
        return self.prediction.text()


def verdict(prediction: Prediction, decision_probability: Optional[float], scores: Optional[np.ndarray],
            policy: Optional[GatePolicy], refusal: Optional[str] = None, warnings: Sequence[str] = ()) -> Verdict:
    """The answer for one input: ``refusal`` (from the host's checks) first, then the in-graph checks, then
    the REFER band on the positive class's decision-scale probability."""
    if policy is None:
        return Verdict(STATUS_DECIDED, prediction, warnings=tuple(warnings))
    reason = refusal or (score_refusal(scores, policy) if scores is not None else None)
    if reason:
        return Verdict(STATUS_NOT_ASSESSED, None, reason, scores, tuple(warnings))
    if decision_probability is not None and in_refer_band(decision_probability, policy):
        return Verdict(STATUS_REFER, prediction, "near the threshold", scores, tuple(warnings))
    return Verdict(STATUS_DECIDED, prediction, "", scores, tuple(warnings))
