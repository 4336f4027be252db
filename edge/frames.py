"""One image travelling through the runner: from a file or a video, to the network, to the outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class Frame:
    index: int
    name: str                 # where its annotated copy goes inside an output folder
    origin: str               # the file, or "<uri> frame N"
    display: np.ndarray       # what the overlay is drawn on: grey (files) or BGR (video), maybe reduced
    grey: np.ndarray          # the single-channel image the network input is made from
    data: Optional[bytes] = None  # the encoded file, when a reduced decode must be redone at full size
    timings: Dict[str, float] = field(default_factory=dict)  # ms per pipeline stage
    network: Optional[np.ndarray] = None  # uint8 R x R network image, made by the pipeline (core/preprocess.py)
    refusal: Optional[str] = None  # why the input gate will not let the model answer for it (host checks)
    warnings: List[str] = field(default_factory=list)  # what the gate flags without refusing (a DICOM's age)
