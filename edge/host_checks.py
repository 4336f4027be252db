"""The input gate's checks that need the decoded frame rather than the network input: its size, its
colour (the grey network input has lost it) and, for a DICOM, its header (core/dicom_gate.py). They run
in the decode workers, beside the decode; the rest of the gate runs in the model (core/input_gate.py)."""
from __future__ import annotations

from cxr_jetson.core.decode import colour_sample, is_dicom
from cxr_jetson.core.dicom_gate import REFUSE, dicom_header_findings
from cxr_jetson.core.input_gate import GatePolicy, colourfulness, frame_refusal
from cxr_jetson.edge.frames import Frame


def check_frame(frame: Frame, policy: GatePolicy, resolution: int) -> None:
    """Record on ``frame`` why the gate refuses it (the first reason) and what it only warns about."""
    reasons = []
    if frame.data is not None and is_dicom(frame.data):
        for finding in dicom_header_findings(frame.data, policy.age_range_years):
            (reasons if finding.action == REFUSE else frame.warnings).append(finding.reason)
    # A video frame arrives in colour; a file was decoded to grey, so its colour needs a small decode.
    coloured = frame.display if frame.display.ndim == 3 or frame.data is None else colour_sample(frame.data)
    colour = colourfulness(coloured) if coloured is not None else 0.0
    own = frame_refusal(frame.grey.shape, colour, resolution, policy)
    if own:
        reasons.append(own)
    frame.refusal = reasons[0] if reasons else None
