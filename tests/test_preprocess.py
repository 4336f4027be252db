"""The shared decode + preprocessing definition (core/decode.py, core/preprocess.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_jetson.core.decode import ImageDecodeError, decode_grey, jpeg_reduction, jpeg_size, read_grey
from cxr_jetson.core.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    load_for_network,
    normalize,
    resize_to_network,
    window_to_uint8,
)
from cxr_jetson.data.synthetic import synthetic_xray


def _encode(ext: str, pixels: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(ext, pixels, list(params))
    assert ok
    return buffer.tobytes()


@pytest.fixture(scope="module")
def xray() -> np.ndarray:
    return synthetic_xray(np.random.default_rng(1), True, 900, 1100)


@pytest.mark.parametrize("progressive", [0, 1])
def test_jpeg_size_reads_the_frame_header(xray, progressive):
    data = _encode(".jpg", xray, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive)
    assert jpeg_size(data) == xray.shape
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00") is None


def test_reduced_jpeg_decode_keeps_twice_the_network_size_and_matches_a_full_decode(xray):
    assert PreprocessSpec().decode_min_side == 0  # the default decodes in full; earlier models record 2
    spec = PreprocessSpec(resolution=224, jpeg_reduce_min_ratio=2)
    data = _encode(".jpg", xray, cv2.IMWRITE_JPEG_QUALITY, 95)
    assert jpeg_reduction(data, spec.decode_min_side) == 2  # 900 // 2 = 450 >= 448; 900 // 4 < 448
    reduced = decode_grey(data, "x.jpg", spec.decode_min_side)
    assert reduced.shape == (450, 550)
    full = resize_to_network(decode_grey(data, "x.jpg"), spec).astype(int)
    fast = resize_to_network(reduced, spec).astype(int)
    assert np.abs(full - fast).mean() < 0.5  # the tolerance stated in PreprocessSpec


def test_small_jpegs_are_decoded_in_full(xray):
    small = cv2.resize(xray, (224, 224))
    assert jpeg_reduction(_encode(".jpg", small), 448) == 1


def test_grey_rgb_rgba_and_16_bit_inputs_become_one_grey_channel(tmp_path, xray):
    grey = cv2.resize(xray, (300, 240))
    rgb = cv2.merge([grey, grey, grey])
    alpha = np.full_like(grey, 255)
    alpha[:, :150] = 0  # left half fully transparent: treated as black
    rgba = cv2.merge([grey, grey, grey, alpha])
    sixteen = grey.astype(np.uint16) * 16 + 100  # 12-bit data stored in a 16-bit PNG
    np.testing.assert_array_equal(decode_grey(_encode(".png", grey)), grey)
    np.testing.assert_array_equal(decode_grey(_encode(".png", rgb)), grey)
    decoded_rgba = decode_grey(_encode(".png", rgba))
    assert decoded_rgba[:, :150].max() == 0
    np.testing.assert_array_equal(decoded_rgba[:, 150:], grey[:, 150:])
    decoded16 = decode_grey(_encode(".png", sixteen))
    np.testing.assert_array_equal(decoded16, sixteen)
    # Deeper than 8 bits: windowed to its own min..max, i.e. the 8-bit picture with its contrast stretched.
    low, high = int(grey.min()), int(grey.max())
    stretched = np.rint((grey.astype(float) - low) * 255 / (high - low))
    assert np.abs(window_to_uint8(decoded16) - stretched).max() <= 1


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"this is a text file, not an image\n", "not a readable image"),
])
def test_unreadable_files_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as error:
        read_grey(str(path))
    assert "\n" not in str(error.value)


def test_truncated_jpeg_is_rejected(tmp_path, xray):
    data = _encode(".jpg", xray)
    path = tmp_path / "cut.jpeg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageDecodeError, match="truncated"):
        read_grey(str(path))


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        read_grey(str(tmp_path / "absent.png"))


def test_normalize_replicates_grey_and_applies_imagenet_statistics():
    spec = PreprocessSpec(resolution=32)
    image = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    batch = normalize(image, spec)
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == np.float32
    for channel in range(3):
        expected = (image / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(batch[0, channel], expected, atol=1e-6)


def test_whole_frame_is_stretched_not_cropped(tmp_path):
    # A wide image with a bright right edge: a centre crop would lose it, a stretch keeps it.
    wide = np.zeros((200, 600), np.uint8)
    wide[:, -40:] = 255
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), wide)
    out = load_for_network(str(path), PreprocessSpec(resolution=64))
    assert out.shape == (64, 64) and out[:, -2:].min() > 200


def test_spec_round_trips_and_rejects_unknown_fields():
    spec = PreprocessSpec(resolution=256, interpolation="linear")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="upgrade"):
        PreprocessSpec.from_dict({**spec.to_dict(), "denoise": True})
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessSpec(interpolation="cubic-ish")
