"""DICOM X-rays -> 8-bit grey, the way a radiology viewer shows them (pydicom, optional).

In order: the modality LUT (Rescale Slope/Intercept or a LUT: stored values to physical units),
the VOI LUT or Window Center/Width (the range the radiologist looks at), MONOCHROME1 inverted
(there, higher values are darker), then the displayed range mapped to 0..255. Without a VOI
transform the image's own min..max is used. Compressed transfer syntaxes decode when pydicom has a
handler for them (pylibjpeg, GDCM); otherwise the error names what to install.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

import numpy as np

from cxr_jetson.core.errors import ImageDecodeError


class DicomError(ImageDecodeError):
    """A DICOM file that cannot be turned into an image."""


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom warns (and logs) about every oddity it works around; a failure becomes our one line."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _has_voi(dataset) -> bool:
    return "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def decode_dicom(data: bytes, name: str = "<dicom>") -> np.ndarray:
    """DICOM bytes -> uint8 grey image (the first frame of a multi-frame file)."""
    try:
        import pydicom
    except ImportError:
        raise DicomError(f"{name} is DICOM; reading it needs pydicom: pip install pydicom") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pydicom 3
    except ImportError:  # pydicom 2.x, the last for Python 3.8 (JetPack 5)
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    try:
        with _quiet_pydicom():
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as err:  # pydicom raises several types for damaged files
        raise DicomError(f"{name} is not a readable DICOM file: {str(err).splitlines()[0]}") from None
    if "PixelData" not in dataset and "SOPClassUID" not in dataset and "Modality" not in dataset:
        raise DicomError(f"{name} is not a readable DICOM file (no image or identifying elements in it)")
    if "PixelData" not in dataset:
        raise DicomError(f"{name} is a DICOM file without pixel data (a report or structured document?)")
    try:
        with _quiet_pydicom():
            pixels = dataset.pixel_array
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        described = f"{syntax.name} ({syntax})" if syntax is not None else "its transfer syntax"
        raise DicomError(f"{name}: cannot decode {described}: {str(err).splitlines()[0][:120]}; compressed DICOM "
                         "needs a pydicom handler: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from None
    if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: the first frame
    if pixels.ndim != 2:
        raise DicomError(f"{name} holds {dataset.get('PhotometricInterpretation', '?')} pixels of shape "
                         f"{pixels.shape}; only single-channel X-rays are supported")
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    if _has_voi(dataset):
        # The displayed range is what the VOI transform maps the extremes to: pushing two far-out
        # values through it gives that range without re-deriving pydicom's rules.
        if "VOILUTSequence" in dataset:  # a LUT is indexed by integers
            values, ends = np.rint(values).astype(np.int64), np.array([-(2 ** 31), 2 ** 31 - 1], np.int64)
        else:
            ends = np.array([-1e12, 1e12])
        values = apply_voi_lut(values, dataset, index=0).astype(np.float64)
        mapped = apply_voi_lut(ends, dataset, index=0)
        low, high = float(np.min(mapped)), float(np.max(mapped))
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)
