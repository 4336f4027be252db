"""Fuzz the image decoders with hypothesis: python -m tests.fuzz_decoders [CASES_PER_STRATEGY]

Every input is either decoded to a grey image the network can take, or refused with
ImageDecodeError (the one-line error every command prints); anything else (another exception, a
crash, memory past the process's limit) fails the run. Seeds are real JPEG, PNG (8 and 16 bit) and
DICOM (uncompressed and RLE) files made here; the strategies are random bytes behind each format's
signature, truncations, byte mutations, and headers whose size fields lie. Prints the counts as JSON.
tests/test_fuzz_decoders.py runs it in a child process under an address-space limit.
"""
from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from collections import Counter
from typing import Callable, Dict

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_jetson.core.decode import decode_grey
from cxr_jetson.core.errors import ImageDecodeError
from cxr_jetson.core.image_header import MIN_SIDE, max_pixels
from cxr_jetson.data.synthetic import synthetic_xray

SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "dicom": b"\0" * 128 + b"DICM"}


def _dicom(pixels: np.ndarray, rle: bool) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def seeds() -> Dict[str, bytes]:
    image = synthetic_xray(np.random.default_rng(0), True, 96, 80)
    return {
        "jpeg": cv2.imencode(".jpg", image)[1].tobytes(),
        "png": cv2.imencode(".png", image)[1].tobytes(),
        "png16": cv2.imencode(".png", image.astype(np.uint16) * 257)[1].tobytes(),
        "dicom": _dicom(image.astype(np.uint16) * 16, rle=False),
        "dicom-rle": _dicom(image.astype(np.uint16) * 16, rle=True),
    }


def _size_field(data: bytes, kind: str) -> int:
    """Where the height/width the header claims sit (JPEG SOF, PNG IHDR, DICOM Rows)."""
    if kind == "jpeg":
        return data.index(b"\xff\xc0") + 5
    if kind.startswith("png"):
        return 16
    return data.index(b"\x28\x00\x10\x00") + 8  # (0028,0010) Rows, explicit VR "US" + length 2


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter = Counter()

    def decode(self, strategy: str, data: bytes, name: str) -> None:
        try:
            image = decode_grey(data, name, min_side=224)
        except ImageDecodeError as err:
            assert "\n" not in str(err), f"a refusal must be one line: {err!r}"
            self.outcomes[f"{strategy}: refused"] += 1
            return
        assert image.ndim == 2 and image.dtype in (np.uint8, np.uint16), (image.shape, image.dtype)
        assert min(image.shape) >= MIN_SIDE // 8 and image.size <= max_pixels(), image.shape  # JPEG may decode reduced
        self.outcomes[f"{strategy}: decoded"] += 1


def run(cases: int) -> Dict[str, int]:
    originals, tally = seeds(), Tally()
    config = settings(max_examples=cases, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
    kinds = st.sampled_from(sorted(originals))

    def name_for(kind: str) -> str:
        return "fuzz." + ("dcm" if kind.startswith("dicom") else kind.rstrip("16").replace("jpeg", "jpg"))

    @config
    @given(st.sampled_from(sorted(SIGNATURES)), st.binary(max_size=8192))
    def random_bytes(kind: str, tail: bytes) -> None:
        tally.decode("random bytes", SIGNATURES[kind] + tail, name_for(kind))

    @config
    @given(kinds, st.floats(0.0, 1.0))
    def truncated(kind: str, fraction: float) -> None:
        data = originals[kind]
        tally.decode("truncated", data[: int(len(data) * fraction)], name_for(kind))

    @config
    @given(kinds, st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=24))
    def mutated(kind: str, edits) -> None:
        data = bytearray(originals[kind])
        for where, value in edits:
            data[int(where * len(data))] = value
        tally.decode("mutated bytes", bytes(data), name_for(kind))

    @config
    @given(kinds, st.integers(0, 65535), st.integers(0, 65535))
    def lying_size(kind: str, height: int, width: int) -> None:
        data = bytearray(originals[kind])
        at = _size_field(data, kind)
        if kind == "jpeg":
            data[at:at + 4] = struct.pack(">HH", height, width)
        elif kind.startswith("png"):
            data[at:at + 8] = struct.pack(">II", width, height)
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a consistent IHDR: only the size lies
        else:
            data[at:at + 2] = struct.pack("<H", height)
            data[at + 10:at + 12] = struct.pack("<H", width)  # (0028,0011) Columns follows Rows
        tally.decode("lying size", bytes(data), name_for(kind))

    strategies: Dict[str, Callable[[], None]] = {"random bytes": random_bytes, "truncated": truncated,
                                                 "mutated bytes": mutated, "lying size": lying_size}
    for strategy in strategies.values():
        strategy()
    return dict(sorted(tally.outcomes.items()))


if __name__ == "__main__":
    outcomes = run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    print(json.dumps({"cases": sum(outcomes.values()), "outcomes": outcomes}))
