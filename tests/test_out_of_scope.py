"""The out-of-scope set (bench/out_of_scope.py): every kind written, readable and what its name says."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List

import cv2
import numpy as np
import pytest

from cxr_jetson.bench.out_of_scope import KINDS, main, write_out_of_scope_set

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_KIND = 4


def _xray_like(folder: str, count: int = 3) -> List[str]:
    """Grey 300x260 (h x w) gradients with two dark ellipses, a little different each."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(count):
        image = np.tile(np.linspace(60, 200, 260).astype(np.uint8), (300, 1))
        cv2.ellipse(image, (80, 150), (40, 90 - 10 * k), 0, 0, 360, 20 + 10 * k, -1)
        cv2.ellipse(image, (180, 140 + 5 * k), (40, 90), 0, 0, 360, 30, -1)
        paths.append(os.path.join(folder, f"xray_{k}.png"))
        cv2.imwrite(paths[-1], image)
    return paths


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Dict[str, object]:
    pytest.importorskip("skimage")
    root = str(tmp_path_factory.mktemp("out_of_scope"))
    xrays = _xray_like(os.path.join(root, "xrays"))
    output = os.path.join(root, "set")
    return {"xrays": xrays, "output": output, "written": write_out_of_scope_set(xrays, output, per_kind=PER_KIND)}


def _read(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert image is not None and image.size, path
    return image


def test_every_kind_has_its_files_in_its_folder(made):
    written = made["written"]
    assert tuple(written) == KINDS
    for kind, paths in written.items():
        assert len(paths) == PER_KIND
        assert sorted(os.listdir(os.path.join(made["output"], kind))) == sorted(os.path.basename(p) for p in paths)
        for number, path in enumerate(paths):
            assert os.path.basename(path).startswith(f"{kind}_{number:03d}")
            _read(path)


def test_natural_photos_are_colour_and_sized_and_the_grey_ones_grey(made):
    for path in made["written"]["natural_photo"]:
        image = _read(path).astype(int)
        assert image.ndim == 3 and image.shape[2] == 3 and path.endswith(".jpg")
        assert np.abs(image[..., 0] - image[..., 1]).mean() > 3 or np.abs(image[..., 1] - image[..., 2]).mean() > 3
        assert all(200 <= side <= 1200 for side in image.shape[:2])
    for path in made["written"]["natural_grey"]:
        assert _read(path).ndim == 2 and path.endswith(".png")


def test_tiny_images_have_a_side_below_64(made):
    for path in made["written"]["tiny"]:
        assert min(_read(path).shape[:2]) < 64


def test_blank_frames_are_near_constant_and_noise_is_not(made):
    for path in made["written"]["blank"]:
        assert _read(path).astype(float).std() < 8
    for path in made["written"]["noise"]:
        assert _read(path).astype(float).std() > 8


def test_inverted_xray_is_exactly_255_minus_its_source(made):
    for number, path in enumerate(made["written"]["inverted_xray"]):
        source = cv2.imread(made["xrays"][number % len(made["xrays"])], cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(_read(path), 255 - source)


def test_rotated_xrays_turn_their_source_by_the_angle_in_the_name(made):
    angles = set()
    for number, path in enumerate(made["written"]["rotated_xray"]):
        source = cv2.imread(made["xrays"][number % len(made["xrays"])], cv2.IMREAD_GRAYSCALE)
        angle = int(os.path.basename(path).split("_rot")[1].split("cw")[0])
        angles.add(angle)
        image = _read(path)
        assert image.shape == (source.shape[::-1] if angle in (90, 270) else source.shape)
        np.testing.assert_array_equal(image, np.rot90(source, -angle // 90))  # clockwise
    assert angles == {90, 180, 270}


def test_cropped_xrays_are_a_small_window_brought_back_to_512(made):
    for path in made["written"]["cropped_xray"]:
        image = _read(path)
        assert image.ndim == 2 and max(image.shape) == 512


def test_the_same_seed_writes_the_same_set(made, tmp_path):
    again = write_out_of_scope_set(made["xrays"], str(tmp_path / "again"), per_kind=PER_KIND)
    for kind in KINDS:
        for first, second in zip(made["written"][kind], again[kind]):
            assert os.path.basename(first) == os.path.basename(second)
            with open(first, "rb") as a, open(second, "rb") as b:
                assert a.read() == b.read(), first


def test_a_non_empty_output_folder_is_refused_and_left_alone(made):
    before = sorted(os.listdir(made["output"]))
    with pytest.raises(ValueError, match="not an empty folder"):
        write_out_of_scope_set(made["xrays"], made["output"], per_kind=1)
    assert sorted(os.listdir(made["output"])) == before


def test_no_readable_xray_is_refused_before_anything_is_written(tmp_path):
    not_an_image = tmp_path / "broken.png"
    not_an_image.write_text("not a PNG")
    for paths in ([], [str(not_an_image)]):
        with pytest.raises(ValueError, match="no readable X-ray"):
            write_out_of_scope_set(paths, str(tmp_path / "set"), per_kind=1)
    assert not (tmp_path / "set").exists()


def test_cli_counts_each_kind(tmp_path, capsys):
    pytest.importorskip("skimage")
    _xray_like(str(tmp_path / "xrays" / "nested"), count=1)
    assert main([str(tmp_path / "set"), str(tmp_path / "xrays"), "--per-kind", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{kind}: 1" for kind in KINDS]


def test_cli_missing_xray_dir_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "set"), str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("out_of_scope: ") and error.count("\n") == 1 and "missing" in error
    command = [sys.executable, "-m", "cxr_jetson.bench.out_of_scope", str(tmp_path / "set"), str(tmp_path / "missing")]
    result = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),  # noqa: S603 (our own module)
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("out_of_scope: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "set").exists()
