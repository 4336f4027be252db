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
import threading
import warnings
from typing import Iterator, Tuple

import numpy as np

from cxr_jetson.core.errors import ImageDecodeError, InputWarning
from cxr_jetson.core.image_header import check_size


class DicomError(ImageDecodeError):
    """A DICOM file that cannot be turned into an image."""


# warnings.catch_warnings swaps process-wide state, and images are decoded in worker threads: two
# overlapping blocks can leave "ignore" installed for good, and one can swallow another thread's
# InputWarning. Both go through this lock.
_WARNING_STATE = threading.RLock()


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns (and logs) about every oddity it works around; a failure becomes our one line."""
    logger = logging.getLogger("pydicom")
    with _WARNING_STATE:
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
        with quiet_pydicom():
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as err:  # pydicom raises several types for damaged files
        raise DicomError(f"{name} is not a readable DICOM file: {str(err).splitlines()[0]}") from None
    if "PixelData" not in dataset and "SOPClassUID" not in dataset and "Modality" not in dataset:
        raise DicomError(f"{name} is not a readable DICOM file (no image or identifying elements in it)")
    if "PixelData" not in dataset:
        raise DicomError(f"{name} is a DICOM file without pixel data (a report or structured document?)")
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        raise DicomError(f"{name} has no usable Rows and Columns") from None
    check_size(rows, columns, name)  # before the pixel data is decoded
    try:
        with quiet_pydicom():
            pixels = dataset.pixel_array
    except Exception as err:
        raise DicomError(_pixel_error(dataset, name, err)) from None
    if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: the first frame
    if pixels.ndim != 2:
        raise DicomError(f"{name} holds {dataset.get('PhotometricInterpretation', '?')} pixels of shape "
                         f"{pixels.shape}; only single-channel X-rays are supported")
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    values, low, high = _voi(values, dataset, name, apply_voi_lut)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.rint(scaled * 255.0).astype(np.uint8)


def _pixel_error(dataset, name: str, err: Exception) -> str:
    """One line: what pydicom could not decode, and for compressed pixel data what to install."""
    reason = str(err).splitlines()[0].split(" - ")[0][:120] if str(err) else type(err).__name__
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not getattr(syntax, "is_compressed", False):
        return f"{name}: its pixel data cannot be read ({reason})"
    return (f"{name}: cannot decode {syntax.name} ({syntax}): {reason}; compressed DICOM needs a pydicom "
            "handler: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")


def _voi(values: np.ndarray, dataset, name: str, apply_voi_lut) -> Tuple[np.ndarray, float, float]:
    """The VOI transform (LUT or window) applied, and the displayed range: what it maps the extremes to
    (pushing two far-out values through it gives that range without re-deriving pydicom's rules).
    A window or LUT pydicom refuses (a WindowWidth of 0, say) has a safe fallback: the pixels' own
    min..max, with a warning."""
    if _has_voi(dataset):
        if "VOILUTSequence" in dataset:  # a LUT is indexed by integers
            indexed, ends = np.rint(values).astype(np.int64), np.array([-(2 ** 31), 2 ** 31 - 1], np.int64)
        else:
            indexed, ends = values, np.array([-1e12, 1e12])
        try:
            with quiet_pydicom():
                windowed = apply_voi_lut(indexed, dataset, index=0).astype(np.float64)
                mapped = apply_voi_lut(ends, dataset, index=0)
            return windowed, float(np.min(mapped)), float(np.max(mapped))
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as err:
            reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
            with _WARNING_STATE:
                warnings.warn(f"{name}: its VOI window or LUT is unusable ({reason}); shown over its own pixel "
                              "range instead", InputWarning, stacklevel=2)
    return values, float(values.min()), float(values.max())
