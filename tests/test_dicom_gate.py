"""The DICOM header gate on real files written with pydicom (no mocks)."""
# ruff: noqa: S101  -- pytest's assert is how tests check; S101 guards shipped code run under python -O
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_jetson.core.dicom_gate import REFUSE, WARN, HeaderFinding, dicom_header_findings

DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CLEAN = {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA", "PatientAge": "003Y"}


def _dicom_bytes(drop: tuple = (), **tags) -> bytes:
    """A small 8x8 16-bit MONOCHROME2 file: the clean header, overridden by tags, less the keywords in drop."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("gate.dcm", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = DIGITAL_XRAY, meta.MediaStorageSOPInstanceUID
    ds.PatientID = "TEST-0001"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 64).reshape(8, 8).tobytes()
    with warnings.catch_warnings():  # some tests write invalid values on purpose ("forty", "ap")
        warnings.simplefilter("ignore")
        for key, value in {**CLEAN, **tags}.items():
            setattr(ds, key, value)
    for key in drop:
        delattr(ds, key)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _findings(age_range=(1, 5), drop: tuple = (), **tags):
    return dicom_header_findings(_dicom_bytes(drop, **tags), age_range)


def test_a_clean_paediatric_frontal_chest_radiograph_has_no_findings():
    assert _findings() == []
    assert _findings(Modality="DX", BodyPartExamined=" thorax ", ViewPosition="ap") == []
    assert _findings(drop=("BodyPartExamined", "ViewPosition", "PatientAge")) == []  # absent: nothing against it
    assert _findings(PhotometricInterpretation="MONOCHROME1") == []


@pytest.mark.parametrize("tags, reason", [
    ({"Modality": "MR"}, "DICOM Modality MR, not CR/DX"),
    ({"BodyPartExamined": "HAND"}, "BodyPartExamined HAND, not CHEST"),
    ({"ViewPosition": "LL"}, "lateral view (ViewPosition LL)"),
    ({"ViewPosition": "lateral"}, "lateral view (ViewPosition LATERAL)"),
    ({"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3, "PlanarConfiguration": 0},
     "colour DICOM (PhotometricInterpretation RGB), not a grey X-ray"),
])
def test_refuse_rules(tags, reason):
    assert _findings(**tags) == [HeaderFinding(REFUSE, reason)]


@pytest.mark.parametrize("drop, tags, reason", [
    (("Modality",), {}, "no DICOM Modality"),
    ((), {"Modality": ""}, "no DICOM Modality"),
    ((), {"ViewPosition": "OBL"}, "ViewPosition OBL: not a frontal PA/AP view"),
    ((), {"PatientAge": "045Y"}, "patient age 45Y outside the 1-5 years the model was trained on"),
    ((), {"PatientAge": "006M"}, "patient age 6M outside the 1-5 years the model was trained on"),
])
def test_warn_rules(drop, tags, reason):
    assert _findings(drop=drop, **tags) == [HeaderFinding(WARN, reason)]


def test_several_findings_are_all_reported():
    found = _findings(Modality="CT", ViewPosition="RL", PatientAge="070Y")
    assert [f.action for f in found] == [REFUSE, REFUSE, WARN]


def test_age_is_derived_from_birth_and_study_dates_when_patient_age_is_absent():
    dates = {"PatientBirthDate": "19800101", "StudyDate": "20250601"}
    assert _findings(drop=("PatientAge",), **dates) == [
        HeaderFinding(WARN, "patient age 45Y outside the 1-5 years the model was trained on")]
    assert _findings(drop=("PatientAge",), PatientBirthDate="20220101", StudyDate="20250601") == []
    # StudyDate absent: the first of AcquisitionDate, ContentDate, SeriesDate that is present
    assert _findings(drop=("PatientAge",), PatientBirthDate="19800101", ContentDate="20250601") == [
        HeaderFinding(WARN, "patient age 45Y outside the 1-5 years the model was trained on")]
    # Only one date, or an unparsable one: the age is unknown, so no finding
    assert _findings(drop=("PatientAge",), PatientBirthDate="19800101") == []
    assert _findings(drop=("PatientAge",), PatientBirthDate="1980-01-01", StudyDate="20250601") == []


def test_the_upper_bound_counts_completed_years_and_the_range_is_inclusive():
    assert _findings(PatientAge="071M") == []  # 5 years 11 months is "5"
    assert _findings(PatientAge="005Y") == [] and _findings(PatientAge="001Y") == []
    assert _findings(PatientAge="072M") != []  # 6 years
    assert _findings(PatientAge="011M") != []  # the lower end is exact: 11 months is under 1 year
    born_5y11m = {"PatientBirthDate": "20190101", "StudyDate": "20241201"}
    assert _findings(drop=("PatientAge",), **born_5y11m) == []


def test_a_malformed_patient_age_gives_no_finding():
    assert _findings(PatientAge="forty") == []
    assert _findings(PatientAge="045X") == []


def test_no_age_range_skips_the_age_rule():
    assert _findings(age_range=None, PatientAge="045Y") == []


def test_the_range_is_shown_without_trailing_zeros():
    found = _findings(age_range=(0.5, 12.0), PatientAge="030Y")
    assert found == [HeaderFinding(WARN, "patient age 30Y outside the 0.5-12 years the model was trained on")]


@pytest.mark.parametrize("data", [b"", b"not a dicom at all", bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
def test_bytes_that_are_no_dicom_give_no_findings(data):
    assert dicom_header_findings(data, (1, 5)) == []


def test_a_truncated_file_never_raises():
    data = _dicom_bytes(Modality="MR")
    for cut in (10, 131, 200, len(data) // 2):
        assert isinstance(dicom_header_findings(data[:cut], (1, 5)), list)


def test_odd_values_are_judged_without_leaking_pydicom_warnings():
    data = _dicom_bytes(PatientAge="forty", ViewPosition="lat", StudyDate="2025-06-01")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = dicom_header_findings(data, (1, 5))
    assert found == [HeaderFinding(REFUSE, "lateral view (ViewPosition LAT)")] and caught == []


def test_a_multi_valued_element_is_judged_by_its_first_value():
    assert _findings(ViewPosition=["LL", "PA"]) == [HeaderFinding(REFUSE, "lateral view (ViewPosition LL)")]
    assert _findings(BodyPartExamined=["CHEST", "ABDOMEN"]) == []
