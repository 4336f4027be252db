"""Where the model looked: class activation maps from the same inference, blended onto the image.

The model's second output (``cam_0``, see networks/deployable.py ClassifierWithCam) holds one map per class
whose spatial mean plus the head's bias is that class's logit. For a two-class model the softmax
depends only on the difference of the two logits, so the map shown is the positive class's map
minus the other's: exactly the per-region contribution to the PNEUMONIA-vs-NORMAL decision. Regions
that push towards the positive class are coloured (strongest: red), the rest is left as it was.
Each image's map is scaled to its own maximum: it shows where, not how much.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

HEATMAP_ALPHA = 0.5


def evidence_map(cam: np.ndarray, positive: Optional[int], class_index: int) -> np.ndarray:
    """``C x h x w`` activation maps -> the ``h x w`` map behind the decision."""
    if positive is not None and cam.shape[0] == 2:
        return cam[positive] - cam[1 - positive]
    return cam[class_index]


def blend_heatmap(image_bgr: np.ndarray, evidence: np.ndarray, alpha: float = HEATMAP_ALPHA) -> np.ndarray:
    """Colour the regions with positive evidence, in proportion to it; returns a new image."""
    peak = float(evidence.max())
    if peak <= 0:
        return image_bgr.copy()  # nothing points towards the class: leave the image untouched
    height, width = image_bgr.shape[:2]
    weight = cv2.resize(np.clip(evidence / peak, 0, 1).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(cv2.convertScaleAbs(weight, alpha=255), cv2.COLORMAP_JET)
    mix = weight * alpha
    # OpenCV's per-pixel blend runs vectorised and threaded: on a 2000 px X-ray it is several times
    # faster than the same arithmetic in numpy.
    return cv2.blendLinear(image_bgr, colours, 1.0 - mix, mix)
