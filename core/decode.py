"""Decode an image file into a single-channel array, reading no more than the network needs.

Everything that reads pixels from disk (the data set import, the training cache, the device runner)
comes through here, so "readable image" means the same thing everywhere.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import cv2
import numpy as np

from cxr_jetson.core.dicom import decode_dicom
from cxr_jetson.core.errors import ImageDecodeError
from cxr_jetson.core.image_header import check_size, image_size, jpeg_components, jpeg_size

# A damaged file is reported in one line of ours; OpenCV's own warning about it would be a second.
# (cv2.utils.logging is missing from some older builds; they keep their warnings.)
_cv2_logging = getattr(getattr(cv2, "utils", None), "logging", None)
if _cv2_logging is not None:
    _cv2_logging.setLogLevel(_cv2_logging.LOG_LEVEL_ERROR)

# libjpeg can scale a JPEG down by 2, 4 or 8 while decoding (DCT scaling), far cheaper than a full
# decode followed by a resize.
_REDUCED_GREY_FLAGS = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
                       (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                       (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))

def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ImageDecodeError(f"cannot read {path}: {err.strerror or err}") from None
    if not data:
        raise ImageDecodeError(f"{path} is empty (0 bytes)")
    return data


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return data[128:132] == b"DICM"


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _jpeg_is_complete(data: bytes) -> bool:
    # OpenCV 5 rejects a truncated JPEG, but the OpenCV 4.x that JetPack ships returns a partly grey
    # image with only a warning. Entropy-coded data byte-stuffs 0xFF, so an end-of-image marker near
    # the end of the file means the scan finished.
    return b"\xff\xd9" in data[-1024:]


def jpeg_reduction(data: bytes, min_side: int) -> int:
    """The DCT scale-down factor (1, 2, 4 or 8) ``decode_grey`` uses for these bytes."""
    return _reduction(jpeg_size(data) if min_side > 0 and is_jpeg(data) else None, min_side)


def _reduction(size: Optional[Tuple[int, int]], min_side: int) -> int:
    """The largest DCT scale-down factor that keeps the short side of ``size`` at least ``min_side``."""
    if size is None or min_side <= 0:
        return 1
    short_side = min(size)
    for factor, _ in _REDUCED_GREY_FLAGS:
        if short_side // factor >= min_side:
            return factor
    return 1


def decode_grey(data: bytes, name: str = "<bytes>", min_side: int = 0) -> np.ndarray:
    """Decode encoded image bytes to a 2-D grey array (uint8, or uint16 for 16-bit files).

    DICOM is windowed to uint8 as a viewer shows it (core/dicom.py). Colour is converted to grey,
    and alpha is treated as coverage over black. With ``min_side`` > 0,
    a JPEG is decoded at the largest 1/2, 1/4 or 1/8 scale whose short side stays >= ``min_side``.
    """
    if is_dicom(data) or name.lower().endswith(".dcm"):
        return decode_dicom(data, name)
    claimed = image_size(data)
    if claimed is not None:
        check_size(*claimed, name)  # before anything is allocated
    buffer = np.frombuffer(data, np.uint8)
    try:
        if is_jpeg(data):
            if not _jpeg_is_complete(data):
                raise ImageDecodeError(f"{name} is a truncated JPEG (no end-of-image marker)")
            # the header was read once, above: its size decides the scale
            flag = dict(_REDUCED_GREY_FLAGS).get(_reduction(claimed, min_side), cv2.IMREAD_GRAYSCALE)
            image = cv2.imdecode(buffer, flag)
        else:
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # OpenCV's own limits and codec errors
        raise ImageDecodeError(f"{name} cannot be decoded: {str(err).strip().splitlines()[-1][:160]}") from None
    if image is None or image.size == 0:
        raise ImageDecodeError(f"{name} is not a readable image (corrupt, truncated or unsupported format)")
    if claimed is None:
        check_size(image.shape[0], image.shape[1], name)
    return to_grey(image, name)


def to_grey(image: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Collapse an OpenCV-decoded array (grey, BGR or BGRA; 8 or 16 bit) to one channel."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageDecodeError(f"{name} has an unsupported pixel layout {image.shape}")
    grey = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2GRAY)
    if image.shape[2] == 4:
        alpha = image[:, :, 3].astype(np.float32) / np.iinfo(image.dtype).max
        grey = np.rint(grey.astype(np.float32) * alpha).astype(image.dtype)
    return grey


def colour_sample(data: bytes) -> Optional[np.ndarray]:
    """A small BGR decode of a file that has colour channels (for the input gate's colour check: the grey
    network input has lost them); None for grey files, DICOM (its header says) and undecodable data. A
    one-component JPEG, what X-ray files are, costs a header read and nothing more."""
    if is_dicom(data) or (is_jpeg(data) and jpeg_components(data) == 1):
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


def read_grey(path: str, min_side: int = 0) -> np.ndarray:
    """Read and decode an image file to a 2-D grey array; raises ImageDecodeError with a one-line reason."""
    return decode_grey(read_bytes(path), os.path.basename(path) or path, min_side)
