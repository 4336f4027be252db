"""Bad inputs users really have, made at test time: each maker writes one file (or non-file) at ``path``.

BAD_IMAGES maps a case name to (maker, what the one-line report must say). Nothing here is large on
disk: the decompression bomb is under a megabyte and claims 400 megapixels.
"""
from __future__ import annotations

import os
import shutil
import struct
import zipfile
import zlib
from typing import Callable, Dict, Tuple

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from cxr_jetson.data.synthetic import synthetic_xray
from tests.test_dicom import make_dicom


def good_xray(path: str, seed: int, positive: bool = False, side: int = 160) -> str:
    cv2.imwrite(path, synthetic_xray(np.random.default_rng(seed), positive, side, side))
    return path


def _jpeg_bytes(side: int = 96) -> bytes:
    ok, data = cv2.imencode(".jpg", synthetic_xray(np.random.default_rng(1), False, side, side))
    assert ok
    return data.tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def lying_jpeg(path: str) -> None:
    """A 96 x 96 JPEG whose start-of-frame says 60000 x 60000."""
    data = bytearray(_jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    open(path, "wb").write(bytes(data))


def png_bomb(path: str, side: int = 20000) -> None:
    """A valid grey PNG of side x side zeros: a few hundred KB that inflate to side^2 bytes."""
    compressor, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
                           + _png_chunk(b"IEND", b""))


def png_bad_crc(path: str) -> None:
    ok, data = cv2.imencode(".png", synthetic_xray(np.random.default_rng(2), False, 96, 96))
    data = bytearray(data.tobytes())
    data[-20] ^= 0xFF  # inside the last IDAT: its checksum no longer matches
    open(path, "wb").write(bytes(data))


def lying_bmp(path: str) -> None:
    ok, data = cv2.imencode(".bmp", np.zeros((40, 40), np.uint8))
    data = bytearray(data.tobytes())
    data[18:26] = struct.pack("<ii", 50000, 50000)
    open(path, "wb").write(bytes(data))


def truncated_jpeg(path: str) -> None:
    data = _jpeg_bytes(200)
    open(path, "wb").write(data[: len(data) // 2])


def truncated_png(path: str) -> None:
    ok, data = cv2.imencode(".png", synthetic_xray(np.random.default_rng(3), False, 200, 200))
    open(path, "wb").write(data.tobytes()[:300])


def empty_file(path: str) -> None:
    open(path, "wb").close()


def text_named_as_image(path: str) -> None:
    open(path, "w").write("patient notes, not an image\n")


def random_bytes(path: str) -> None:
    open(path, "wb").write(np.random.default_rng(4).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def one_pixel(path: str) -> None:
    cv2.imwrite(path, np.full((1, 1), 200, np.uint8))


def thin_strip(path: str) -> None:
    cv2.imwrite(path, np.full((4, 3000), 120, np.uint8))


def named_pipe(path: str) -> None:
    os.mkfifo(path)


def folder_named_as_image(path: str) -> None:
    os.mkdir(path)


def dangling_link(path: str) -> None:
    os.symlink(path + ".gone", path)


def link_loop(path: str) -> None:
    os.symlink(os.path.basename(path), path)


def dicom_zero_window(path: str) -> None:
    pixels = synthetic_xray(np.random.default_rng(5), True, 128, 128).astype(np.uint16) * 16
    make_dicom(path, pixels, 12, WindowCenter=2048, WindowWidth=0)


def dicom_without_pixels(path: str) -> None:
    pixels = np.zeros((64, 64), np.uint16)
    make_dicom(path, pixels, 12)
    import pydicom
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(path)


def dicom_lying_rows(path: str) -> None:
    make_dicom(path, np.zeros((64, 64), np.uint16), 12, Rows=60000, Columns=60000)


def dicom_short_pixel_data(path: str) -> None:
    make_dicom(path, np.zeros((64, 64), np.uint16), 12)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 4000])


def dicom_colour(path: str) -> None:
    make_dicom(path, np.zeros((64, 64, 3), np.uint8).reshape(64, 192), 8)
    import pydicom
    dataset = pydicom.dcmread(path)
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.Columns = 3, "RGB", 64
    dataset.PlanarConfiguration = 0
    dataset.save_as(path)


# name -> (maker, file name, words the failure line must contain; None: reported as a warning, still classified)


def model_without_softmax(source: str, target: str, scale: float) -> str:
    """The same network with output_0 taken before its softmax (logits, as --no-activation exports), the
    final layer's weights scaled by ``scale``."""
    model = onnx.load(source)
    graph = model.graph
    softmax = next(node for node in graph.node if "output_0" in node.output)
    assert softmax.op_type == "Softmax", softmax.op_type
    gemm = next(node for node in graph.node if softmax.input[0] in node.output)
    for weights in graph.initializer:
        if weights.name in gemm.input[1:]:
            weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * scale, weights.name))
    gemm.output[0] = "output_0"
    graph.node.remove(softmax)
    onnx.save(model, target)
    shutil.copy(os.path.join(os.path.dirname(source), "labels.txt"), os.path.join(os.path.dirname(target), "labels.txt"))
    return target


def zip_with_bad_crc(download: str, path: str) -> str:
    """``download`` zipped (stored) into ``path``, one member's bytes changed so its CRC no longer matches."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for root, _, files in os.walk(download):
            for name in files:
                full = os.path.join(root, name)
                archive.write(full, os.path.relpath(full, download))
    data = bytearray(open(path, "rb").read())
    first = data.index(b"\x89PNG") if b"\x89PNG" in data else data.index(b"\xff\xd8")
    data[first + 200] ^= 0xFF  # a stored member's bytes no longer match its CRC
    open(path, "wb").write(bytes(data))
    return path


BAD_IMAGES: Dict[str, Tuple[Callable[[str], None], str, str]] = {
    "lying JPEG header": (lying_jpeg, "liar.jpg", "60000 x 60000"),
    "PNG decompression bomb": (png_bomb, "bomb.png", "--max-pixels"),
    "PNG with a bad checksum": (png_bad_crc, "crc.png", "crc.png"),
    "BMP header claiming 50000 x 50000": (lying_bmp, "liar.bmp", "--max-pixels"),
    "truncated JPEG": (truncated_jpeg, "half.jpg", "truncated"),
    "truncated PNG": (truncated_png, "half.png", "half.png"),
    "empty file": (empty_file, "empty.jpg", "empty"),
    "text file named .jpg": (text_named_as_image, "notes.jpg", "not a readable image"),
    "random bytes named .png": (random_bytes, "noise.png", "not a readable image"),
    "1 x 1 image": (one_pixel, "dot.png", "too small"),
    "4 x 3000 strip": (thin_strip, "strip.png", "too small"),
    "DICOM without pixel data": (dicom_without_pixels, "report.dcm", "without pixel data"),
    "DICOM whose Rows lie": (dicom_lying_rows, "liar.dcm", "60000 x 60000"),
    "DICOM with short pixel data": (dicom_short_pixel_data, "short.dcm", "short.dcm"),
    "DICOM in colour": (dicom_colour, "colour.dcm", "only single-channel"),
}
