"""What an encoded image says its size is, read from its header before anything is decoded.

A small file can claim an enormous image (a JPEG header of 60000 x 60000, a PNG decompression bomb
that inflates to gigabytes): decoding it would exhaust memory before failing. Every image is checked
here first, against a pixel limit (100 megapixels by default, 10 times the largest chest X-ray
detectors; ``set_max_pixels``, the commands' ``--max-pixels``) and a minimum side (a handful of pixels
cannot show a chest). JPEG, PNG, BMP, WebP, TIFF and PNM headers are read here; DICOM's Rows and
Columns in core/dicom.py; other formats are left to OpenCV's own limit (2^30 pixels).
"""
from __future__ import annotations

import re
import struct
from typing import Optional, Tuple

from cxr_jetson.core.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 100_000_000
# Below this a picture cannot be a chest X-ray (and the network would see a flat interpolation of it).
MIN_SIDE = 32

_limit = {"pixels": DEFAULT_MAX_PIXELS}

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
_PNM = re.compile(rb"^P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)")


def set_max_pixels(pixels: int) -> None:
    """The largest image (width x height) any decode in this process accepts."""
    if pixels < 1:
        raise ValueError("the pixel limit must be positive")
    _limit["pixels"] = int(pixels)


def max_pixels() -> int:
    return _limit["pixels"]


def _jpeg_frame_header(data: bytes) -> Optional[int]:
    """Offset of a JPEG's start-of-frame marker, or None if the header is unreadable."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF_MARKERS:
            return pos if pos + 10 <= end else None
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) from a JPEG's start-of-frame header, or None if the header is unreadable."""
    pos = _jpeg_frame_header(data)
    if pos is None:
        return None
    height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
    return (height, width) if height and width else None


def jpeg_components(data: bytes) -> Optional[int]:
    """How many colour components a JPEG's frame has (1: grey), or None if the header is unreadable."""
    pos = _jpeg_frame_header(data)
    return None if pos is None else data[pos + 9]


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[28:30], "little") & 0x3FFF, int.from_bytes(data[26:28], "little") & 0x3FFF
    return None


def _tiff_size(data: bytes) -> Optional[Tuple[int, int]]:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset:offset + 2])
        size = {}
        for index in range(count):
            entry = data[offset + 2 + 12 * index:offset + 14 + 12 * index]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
                size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    except struct.error:
        return None
    return (size[257], size[256]) if 256 in size and 257 in size else None


def image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) an image file's header claims, or None for a format not read here."""
    if data[:3] == b"\xff\xd8\xff":
        return jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(height), abs(width)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    match = _PNM.match(data[:512])
    return (int(match.group(2)), int(match.group(1))) if match else None


def check_size(height: int, width: int, name: str) -> None:
    """One-line refusal of an image too large to decode safely or too small to be an X-ray."""
    if height * width > _limit["pixels"]:
        raise ImageDecodeError(f"{name} is {width} x {height} pixels ({height * width / 1e6:.0f} MP), above the limit of "
                               f"{_limit['pixels'] / 1e6:.0f} MP: not decoded (raise it with --max-pixels if the image "
                               "is real)")
    if min(height, width) < MIN_SIDE:
        raise ImageDecodeError(f"{name} is {width} x {height} pixels: too small to be a chest X-ray "
                               f"(at least {MIN_SIDE} pixels a side)")
