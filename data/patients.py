"""Patient identity from the official Kermany et al. file names.

Several images can share a patient, so splits must be made by patient, never by image:
``person123_bacteria_456.jpeg`` and ``person123_virus_457.jpeg`` belong to ``person123``;
``IM-0115-0001.jpeg`` and ``IM-0115-0001-0002.jpeg`` to ``IM-0115``;
``NORMAL2-IM-0381-0001.jpeg`` to ``NORMAL2-IM-0381``.
"""
from __future__ import annotations

import os
import re
from typing import Optional

_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id(filename: str) -> Optional[str]:
    """The patient a file belongs to, or None when the name follows no known convention."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    for pattern in _PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return None
