"""Refuse (or flag) a DICOM whose header says it is not what the model was trained on.

The model saw paediatric frontal chest radiographs; a header that says otherwise is acted on before
any pixels are decoded. The reasons are short: they are shown after "NOT ASSESSED: " on the image.

    element                    value                                    action
    Modality                   CR, DX                                   -
                               missing or empty                         warn
                               anything else (MR, CT, US, ...)          refuse
    BodyPartExamined           missing, empty, CHEST, THORAX, LUNG      -
                               anything else (HAND, SKULL, ...)         refuse
    ViewPosition               missing, empty, PA, AP                   -
                               LL, RL, LLD, RLD, LAT, LATERAL           refuse (a lateral view)
                               anything else                            warn
    PhotometricInterpretation  missing, MONOCHROME1, MONOCHROME2        - (the decoder inverts MONOCHROME1)
                               anything else (RGB, YBR_*, PALETTE ...)  refuse
    patient age                unknown, or inside age_range_years       -
    (age_range_years=None      outside it                               warn (a valid image; the model is
     skips this rule)                                                         just not validated there)

Values are compared upper-cased and stripped. The age is PatientAge (nnnD/W/M/Y), else the span from
PatientBirthDate to StudyDate (or AcquisitionDate, ContentDate, SeriesDate: the first present). The
range is inclusive, and at its upper end the age counts in completed years, as people say it: with
(1, 5) a child of 5 years 11 months ("071M") is 5 and passes; the lower end compares the exact age.
Unreadable files give no findings: decode_dicom reports those itself.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import List, Optional, Tuple

from cxr_jetson.core.dicom import quiet_pydicom

REFUSE = "refuse"
WARN = "warn"

_MODALITIES = {"CR", "DX"}
_CHEST = {"CHEST", "THORAX", "LUNG"}
_FRONTAL = {"", "PA", "AP"}
_LATERAL = {"LL", "RL", "LLD", "RLD", "LAT", "LATERAL"}
_GREY = {"", "MONOCHROME1", "MONOCHROME2"}
_PER_YEAR = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}  # units of PatientAge in one year
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")  # DICOM AS is nnnU; a writer that drops the padding is tolerated
_STUDY_DATES = ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate")


@dataclass(frozen=True)
class HeaderFinding:
    action: str  # REFUSE or WARN
    reason: str  # shown after "NOT ASSESSED: "


def _text(dataset, keyword: str) -> str:
    """An element as upper-case text, "" when absent; never raises (force=True reads odd values)."""
    try:
        value = dataset.get(keyword, "")
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # pydicom's MultiValue
            value = value[0] if len(value) else ""  # a multi-valued code: its first value decides
        if isinstance(value, bytes):  # an element read as UN (unknown VR)
            value = value.decode("latin-1")
        return str(value or "").strip().upper()
    except Exception:  # a raw element whose value cannot be converted reads as absent
        return ""


def _date(text: str) -> Optional[date]:
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _age(dataset) -> Optional[Tuple[float, str]]:
    """(age in years, how to show it), or None when the header does not say."""
    match = _AGE.match(_text(dataset, "PatientAge"))
    if match:
        number, unit = int(match.group(1)), match.group(2)
        return number / _PER_YEAR[unit], f"{number}{unit}"
    born = _date(_text(dataset, "PatientBirthDate"))
    taken = next((_date(_text(dataset, k)) for k in _STUDY_DATES if _text(dataset, k)), None)
    if born is None or taken is None or taken < born:
        return None
    years = (taken - born).days / 365.25
    return years, (f"{math.floor(years)}Y" if years >= 2 else f"{math.floor(years * 12)}M")


def dicom_header_findings(data: bytes, age_range_years: Optional[Tuple[float, float]]) -> List[HeaderFinding]:
    """What the header of one DICOM file says against using the model on it ([] when nothing); the reasons
    do not name the file: the overlay and the results row already do."""
    try:
        import pydicom
    except ImportError:
        return []
    try:
        # Element values convert (and pydicom warns about odd ones) when read: judge inside the quiet block
        with quiet_pydicom():
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            return _judge(dataset, data[128:132] == b"DICM", age_range_years)
    except Exception:  # pydicom raises several types for damaged files; those are decode_dicom's to report
        return []


def _judge(dataset, has_preamble: bool, age_range_years: Optional[Tuple[float, float]]) -> List[HeaderFinding]:
    # force=True turns any bytes into some dataset: without an identifying element this is no DICOM
    # header to judge (a "no Modality" warning on a JPEG would be noise).
    identified = any(k in dataset for k in ("SOPClassUID", "Modality", "PhotometricInterpretation"))
    if not (has_preamble or identified):
        return []
    found: List[HeaderFinding] = []
    modality = _text(dataset, "Modality")
    if not modality:
        found.append(HeaderFinding(WARN, "no DICOM Modality"))
    elif modality not in _MODALITIES:
        found.append(HeaderFinding(REFUSE, f"DICOM Modality {modality}, not CR/DX"))
    body_part = _text(dataset, "BodyPartExamined")
    if body_part and body_part not in _CHEST:
        found.append(HeaderFinding(REFUSE, f"BodyPartExamined {body_part}, not CHEST"))
    view = _text(dataset, "ViewPosition")
    if view in _LATERAL:
        found.append(HeaderFinding(REFUSE, f"lateral view (ViewPosition {view})"))
    elif view not in _FRONTAL:
        found.append(HeaderFinding(WARN, f"ViewPosition {view}: not a frontal PA/AP view"))
    photometric = _text(dataset, "PhotometricInterpretation")
    if photometric not in _GREY:
        reason = f"colour DICOM (PhotometricInterpretation {photometric}), not a grey X-ray"
        found.append(HeaderFinding(REFUSE, reason))
    age = _age(dataset) if age_range_years is not None else None
    if age is not None and age_range_years is not None:
        (years, shown), (low, high) = age, age_range_years
        if years < low or math.floor(years) > high:  # the upper end in completed years (see above)
            reason = f"patient age {shown} outside the {low:g}-{high:g} years the model was trained on"
            found.append(HeaderFinding(WARN, reason))
    return found
