"""Draw predictions on an image in jetson-inference style: ``93.41% PNEUMONIA`` at the top left.

The text is sized from the image, so it is as legible on a 2000 px radiograph as on a 224 px
thumbnail, and the first line's colour shows the decision against the model's threshold.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cxr_jetson.core.input_gate import STATUS_NOT_ASSESSED, STATUS_REFER, Verdict
from cxr_jetson.core.preprocess import window_to_uint8
from cxr_jetson.edge.heatmap import blend_heatmap

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_BGR = (255, 255, 255)
_POSITIVE_BGR = (30, 30, 200)   # red box: positive class at or above the threshold
_NEGATIVE_BGR = (40, 140, 30)   # green box: below the threshold
_NEUTRAL_BGR = (0, 0, 0)        # dark box: argmax models and further top-K lines (jetson-inference's look)
_REFER_BGR = (0, 140, 230)      # amber box: REFER, too close to the threshold to decide
_REFUSED_BGR = (90, 90, 90)     # grey box: NOT ASSESSED, the model was not made for this input
_TEXT_WIDTH_FRACTION = 0.42     # the first line spans about this much of a large image's width
_MIN_SCALE = 0.5                # about 11 px high: the smallest text that stays readable on 224 px images
_BACKGROUND_ALPHA = 0.7


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey or colour, 8 or 16 bit) -> a new uint8 BGR image for drawing."""
    image8 = window_to_uint8(image)
    if image8.ndim == 2:
        return cv2.cvtColor(image8, cv2.COLOR_GRAY2BGR)
    return image8[:, :, :3].copy()


def _font_scale(reference_text: str, image_width: int) -> float:
    (width, _), _ = cv2.getTextSize(reference_text, _FONT, 1.0, 2)
    return max(_MIN_SCALE, _TEXT_WIDTH_FRACTION * image_width / max(width, 1))


def lines_for(answer: Verdict, top_k: int) -> List[Tuple[str, Tuple[int, int, int]]]:
    prediction = answer.prediction
    if answer.status == STATUS_NOT_ASSESSED:
        return [(answer.text(), _REFUSED_BGR)]  # no class, no probability: the model could not read it
    if answer.status == STATUS_REFER:
        first_colour = _REFER_BGR
    elif prediction.positive is None:
        first_colour = _NEUTRAL_BGR
    else:
        first_colour = _POSITIVE_BGR if prediction.positive else _NEGATIVE_BGR
    lines = [(answer.text(), first_colour)]
    others = [entry for entry in prediction.ranked if entry[0] != prediction.label]
    for label, probability in others[:max(top_k, 1) - 1]:
        lines.append((f"{probability * 100:05.2f}% {label}", _NEUTRAL_BGR))
    return lines


def draw_lines(image_bgr: np.ndarray, lines: Sequence[Tuple[str, Tuple[int, int, int]]],
               scale: Optional[float] = None) -> np.ndarray:
    """Draw white text lines stacked at the top left, each on a translucent box of its colour."""
    height, width = image_bgr.shape[:2]
    scale = scale or _font_scale("00.00% PNEUMONIA", width)
    thickness = max(1, int(round(scale * 2)))
    margin = max(2, int(round(5 * scale)))
    sizes = [cv2.getTextSize(text, _FONT, scale, thickness) for text, _ in lines]
    line_height = max(h + baseline for (_, h), baseline in sizes) + margin
    for row, ((text, colour), ((text_width, text_height), _)) in enumerate(zip(lines, sizes)):
        top, bottom = row * line_height, min(height, (row + 1) * line_height + margin // 2)
        region = image_bgr[top:bottom, :min(width, text_width + 2 * margin)]
        tint = np.asarray(colour, np.float32) * _BACKGROUND_ALPHA
        region[:] = (region.astype(np.float32) * (1 - _BACKGROUND_ALPHA) + tint).astype(np.uint8)
        y = top + margin + text_height
        cv2.putText(image_bgr, text, (margin, y), _FONT, scale, _TEXT_BGR, thickness, cv2.LINE_AA)
    return image_bgr


def annotate(image: np.ndarray, answer: Verdict, top_k: int = 1,
             evidence: Optional[np.ndarray] = None) -> np.ndarray:
    """A BGR copy of ``image`` with the answer drawn on it, over the heatmap of ``evidence`` if given."""
    canvas = to_bgr(image)
    if evidence is not None:
        canvas = blend_heatmap(canvas, evidence)
    return draw_lines(canvas, lines_for(answer, top_k))
