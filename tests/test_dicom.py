"""DICOM input built with pydicom: LUTs, windowing, MONOCHROME1, bit depths, compression, bad files."""
from __future__ import annotations

import csv
import os

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid

from cxr_jetson.core.decode import ImageDecodeError, read_grey
from cxr_jetson.core.dicom import DicomError, decode_dicom
from cxr_jetson.data.synthetic import synthetic_xray
from tests.conftest import run_script

DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def make_dicom(path, pixels: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2", **elements) -> str:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DIGITAL_XRAY, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "TEST-0001"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def _gradient(bits: int, dtype) -> np.ndarray:
    return (np.linspace(0, 2 ** bits - 1, 64 * 80).reshape(64, 80)).astype(dtype)


def test_monochrome2_16_bit_with_window_matches_the_standard_linear_function(tmp_path):
    pixels = _gradient(16, np.uint16)
    center, width = 30000.0, 20000.0
    path = make_dicom(tmp_path / "a.dcm", pixels, 16, WindowCenter=center, WindowWidth=width)
    image = read_grey(path)
    expected = np.clip((pixels - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255  # DICOM PS3.3 C.11.2.1.2.1
    assert image.dtype == np.uint8 and np.abs(image - expected).max() <= 1


def test_monochrome1_is_inverted(tmp_path):
    pixels = _gradient(12, np.uint16)
    normal = read_grey(make_dicom(tmp_path / "m2.dcm", pixels, 12))
    inverted = read_grey(make_dicom(tmp_path / "m1.dcm", pixels, 12, "MONOCHROME1"))
    assert normal[0, 0] == 0 and normal[-1, -1] == 255
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_8_bit_without_voi_and_rescale_slope_use_the_image_range(tmp_path):
    pixels = (np.arange(64 * 80) % 200 + 20).reshape(64, 80).astype(np.uint8)
    image = read_grey(make_dicom(tmp_path / "eight.dcm", pixels, 8, RescaleSlope=2.0, RescaleIntercept=-100.0))
    expected = (pixels.astype(float) - 20) / 199 * 255  # the modality LUT is linear: the stretch undoes it
    assert np.abs(image - expected).max() <= 1


def test_12_bit_with_a_voi_lut_sequence(tmp_path):
    pixels = _gradient(12, np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    curve = np.rint(np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)  # a gamma-like display curve
    item.add_new(0x00283006, "OW", curve.tobytes())  # LUT Data
    path = make_dicom(tmp_path / "voi.dcm", pixels, 12, VOILUTSequence=[item])
    image = read_grey(path)
    expected = np.sqrt(pixels / 4095.0) * 255
    assert np.abs(image.astype(float) - expected).max() <= 1.5


def test_dicom_without_extension_is_recognised(tmp_path):
    path = make_dicom(tmp_path / "IM000001", _gradient(16, np.uint16), 16)
    assert read_grey(path).shape == (64, 80)


def test_rle_compressed_decodes_with_pydicom_alone(tmp_path):
    path = make_dicom(tmp_path / "plain.dcm", _gradient(16, np.uint16), 16)
    dataset = pydicom.dcmread(path)
    dataset.compress(RLELossless)
    dataset.save_as(str(tmp_path / "rle.dcm"))
    np.testing.assert_array_equal(read_grey(str(tmp_path / "rle.dcm")), read_grey(path))


def test_compressed_without_a_handler_names_what_to_install(tmp_path):
    path = make_dicom(tmp_path / "jls.dcm", _gradient(16, np.uint16), 16)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not a real JPEG-LS stream \xff\xd9"])
    dataset.save_as(str(tmp_path / "jls.dcm"))
    with pytest.raises(DicomError, match="JPEG-LS") as error:
        read_grey(str(tmp_path / "jls.dcm"))
    assert "pip install" in str(error.value)


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    path = make_dicom(tmp_path / "report.dcm", _gradient(8, np.uint8), 8)
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(str(tmp_path / "report.dcm"))
    with pytest.raises(ImageDecodeError, match="without pixel data"):
        read_grey(str(tmp_path / "report.dcm"))
    with pytest.raises(DicomError, match="not a readable DICOM"):
        decode_dicom(b"\0" * 128 + b"DICM" + b"\x02\x00garbage", "broken.dcm")


def test_classify_reads_a_folder_of_dicom(tmp_path, exported_onnx):
    folder = tmp_path / "study"
    folder.mkdir()
    picture = synthetic_xray(np.random.default_rng(0), True, 300, 360).astype(np.uint16) * 16
    make_dicom(folder / "a.dcm", picture, 12, "MONOCHROME2", WindowCenter=2048.0, WindowWidth=4096.0)
    make_dicom(folder / "IM0002", 4095 - picture, 12, "MONOCHROME1", WindowCenter=2048.0, WindowWidth=4096.0)
    without_pixels = pydicom.dcmread(make_dicom(folder / "sr.dcm", _gradient(8, np.uint8), 8))
    del without_pixels.PixelData
    without_pixels.save_as(str(folder / "sr.dcm"))
    out = tmp_path / "out"
    result = run_script("classify.py", str(folder), str(out), "--model", exported_onnx)
    assert result.returncode == 1, result.stderr  # one file could not be classified
    assert "without pixel data" in result.stderr and "classified 2 image(s), 1 failed" in result.stdout
    assert sorted(os.listdir(out)) == ["IM0002.png", "a.png", "results.csv"]
    with open(out / "results.csv", newline="") as handle:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(handle)}
    # The same picture stored as MONOCHROME2 and as inverted MONOCHROME1 reads the same way.
    assert rows["a.dcm"]["p_PNEUMONIA"] == rows["IM0002"]["p_PNEUMONIA"]
