"""classify.py as users run it: files, folders, globs, bad inputs, outputs and results files."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil

import cv2
import numpy as np
import onnx
import pytest

from cxr_jetson.core.decode import read_grey
from cxr_jetson.core.model_info import KEY_PREPROCESS
from cxr_jetson.core.preprocess import PreprocessSpec, resize_to_network
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.pipeline import _prepare
from cxr_jetson.edge.sources import ImageFileSource
from cxr_jetson.edge.video_source import CaptureOptions
from tests.conftest import run_script


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> str:
    """Good images of every supported kind next to the broken files users really have."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(7)
    big = synthetic_xray(rng, True, 1400, 1700)
    cv2.imwrite(str(folder / "fullres.jpeg"), big)
    cv2.imwrite(str(folder / "small.jpg"), cv2.resize(synthetic_xray(rng, False, 300, 300), (224, 224)))
    grey = synthetic_xray(rng, False, 400, 500)
    cv2.imwrite(str(folder / "sixteen_bit.png"), grey.astype(np.uint16) * 257)
    alpha = np.full_like(grey, 255)
    cv2.imwrite(str(folder / "rgba.png"), cv2.merge([grey, grey, grey, alpha]))
    data = open(folder / "fullres.jpeg", "rb").read()
    (folder / "corrupt.jpeg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file with an image name\n")
    (folder / "readme.txt").write_text("not an image, not even by name\n")
    return str(folder)


def _rows(path: str) -> dict:
    with open(path, newline="") as handle:
        return {os.path.basename(row["path"]): row for row in csv.DictReader(handle)}


def test_folder_with_bad_files_classifies_the_rest_and_reports_them(mixed_folder, exported_onnx, tmp_path):
    out = tmp_path / "annotated"
    result = run_script("classify.py", mixed_folder, str(out), "--model", os.path.dirname(exported_onnx))
    assert result.returncode == 1, result.stderr  # some inputs failed; the others were done
    rows = _rows(str(out / "results.csv"))
    good = {"fullres.jpeg", "small.jpg", "sixteen_bit.png", "rgba.png"}
    bad = {"corrupt.jpeg": "truncated", "empty.jpg": "empty", "notes.jpg": "not a readable image"}
    assert {name for name, row in rows.items() if row["status"] == "ok"} == good
    for name, reason in bad.items():
        assert rows[name]["status"] == "error" and reason in rows[name]["error"]
        assert name in result.stderr
    for name in good:
        annotated = cv2.imread(str(out / name))
        original = cv2.imread(os.path.join(mixed_folder, name), cv2.IMREAD_UNCHANGED)
        assert annotated.shape[:2] == original.shape[:2]
        assert rows[name]["label"] in ("NORMAL", "PNEUMONIA")
        assert float(rows[name]["p_NORMAL"]) + float(rows[name]["p_PNEUMONIA"]) == pytest.approx(1, abs=1e-5)
    assert "classified 4 image(s), 3 failed, 1 file(s) passed over (not images, or not regular files)" in result.stdout
    assert result.stdout.count("classify:  ") == 4


def test_single_image_to_file_draws_the_jetson_style_text(mixed_folder, exported_onnx, tmp_path):
    source = os.path.join(mixed_folder, "fullres.jpeg")
    out = tmp_path / "out.jpg"
    result = run_script("classify.py", source, str(out), "--model", exported_onnx)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("classify:  "))
    assert line.split()[1].endswith("%") and "class #" in line
    annotated = cv2.imread(str(out)).astype(int)
    original = cv2.cvtColor(cv2.imread(source, cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR).astype(int)
    # Text sits at the top left and is sized for the image: a large changed area there, none elsewhere.
    changed = np.abs(annotated - original).max(axis=2) > 40
    height, width = changed.shape
    assert changed[: height // 8, : width // 2].mean() > 0.05
    assert changed[height // 4:, :].mean() < 0.001


def test_glob_input_and_explicit_threshold(mixed_folder, exported_onnx, tmp_path):
    results = tmp_path / "r.jsonl"
    result = run_script("classify.py", os.path.join(mixed_folder, "*.png"), "--model", exported_onnx,
                        "--threshold", "0", "--results", str(results))
    assert result.returncode == 0, result.stderr
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and all('"label": "PNEUMONIA"' in line for line in lines)  # p >= 0 always


@pytest.mark.parametrize("arguments, message", [
    (["--model", "/no/such/model"], "not found"),
    (["--labels", "LABELS3"], "lists 3 classes but the model outputs 2"),
    (["--threshold", "1.5"], "outside 0..1"),
    (["OUT_IS_A_FILE"], "is one file but the input has"),
])
def test_bad_invocations_are_one_line_errors(arguments, message, mixed_folder, exported_onnx, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("NORMAL\nBACTERIAL\nVIRAL\n")
    substitutions = {"LABELS3": str(labels), "OUT_IS_A_FILE": str(tmp_path / "one.jpg")}
    arguments = [substitutions.get(a, a) for a in arguments]
    positional = [a for a in arguments if a.endswith(".jpg")]
    options = [a for a in arguments if not a.endswith(".jpg")]
    if "--model" not in options:
        options += ["--model", exported_onnx]
    result = run_script("classify.py", mixed_folder, *positional, *options)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_model_dir_without_onnx_says_how_to_export(tmp_path, mixed_folder):
    result = run_script("classify.py", mixed_folder, "--model", str(tmp_path))
    assert result.returncode == 2 and "onnx_export.py --model-dir" in result.stderr


def test_labels_file_beside_a_plain_onnx_is_used(exported_onnx, mixed_folder, tmp_path):
    # A jetson-inference style model: no metadata, labels.txt beside it, argmax decision.
    model = onnx.load(exported_onnx)
    del model.metadata_props[:]
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    onnx.save(model, str(plain_dir / "resnet18.onnx"))
    shutil.copy(os.path.join(os.path.dirname(exported_onnx), "labels.txt"), plain_dir / "labels.txt")
    result = run_script("classify.py", os.path.join(mixed_folder, "small.jpg"), "--model", str(plain_dir))
    assert result.returncode == 0, result.stderr
    assert "decision: PNEUMONIA if p >= 0.5000" in result.stdout  # no stored threshold: the more likely class


def test_device_path_never_imports_torch(exported_onnx, mixed_folder, tmp_path):
    program = ("import runpy, sys\n"
               f"sys.argv = ['classify.py', {os.path.join(mixed_folder, 'small.jpg')!r}, {str(tmp_path / 'o.jpg')!r},"
               f" '--model', {exported_onnx!r}]\n"
               "try:\n    runpy.run_path('classify.py', run_name='__main__')\n"
               "except SystemExit as done:\n    assert done.code in (0, None), done.code\n"
               "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n")
    result = run_script("-c", program)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "o.jpg").is_file()


def _jpeg_sampling(path: str) -> list:
    """(horizontal, vertical) sampling factors of each component, from the JPEG's baseline frame header."""
    data = open(path, "rb").read()
    start = data.index(b"\xff\xc0") + 9  # marker, length, precision, height, width
    return [(data[start + 2 + 3 * i] >> 4, data[start + 2 + 3 * i] & 15) for i in range(data[start])]


def _with_reduced_decoding(onnx_path: str, folder) -> str:
    """A copy of the model whose preprocessing decodes large JPEGs at reduced scale for the network, as
    models made before full decoding became the default record (``jpeg_reduce_min_ratio`` 2)."""
    model = onnx.load(onnx_path)
    for prop in model.metadata_props:
        if prop.key == KEY_PREPROCESS:
            spec = PreprocessSpec.from_dict(json.loads(prop.value))
            prop.value = dataclasses.replace(spec, jpeg_reduce_min_ratio=2).to_json()
    copy = str(folder / os.path.basename(onnx_path))
    onnx.save(model, copy)
    return copy


def test_an_earlier_model_sees_a_reduced_decode_at_either_output_size_and_the_picture_is_4_2_0(
        mixed_folder, exported_onnx, tmp_path):
    """The picture is decoded at full size in the decode workers, the network input is the reduced decode
    either way: the same probabilities whatever size the annotated copy is written at."""
    model = _with_reduced_decoding(exported_onnx, tmp_path)
    results = {}
    for size in ("full", "decoded"):
        out = tmp_path / size
        assert run_script("classify.py", mixed_folder, str(out), "--model", model, "--output-size", size).returncode == 1
        results[size] = _rows(str(out / "results.csv"))["fullres.jpeg"]
    assert results["full"]["p_PNEUMONIA"] == results["decoded"]["p_PNEUMONIA"]
    full, decoded = (cv2.imread(str(tmp_path / size / "fullres.jpeg")) for size in ("full", "decoded"))
    assert full.shape[:2] == (1400, 1700) and decoded.shape[0] < 1400
    assert _jpeg_sampling(str(tmp_path / "full" / "fullres.jpeg")) == [(2, 2), (1, 1), (1, 1)]


def test_by_default_one_full_decode_is_both_the_network_input_and_the_picture(mixed_folder, exported_onnx):
    spec = DeployedModel(exported_onnx).spec
    assert spec.jpeg_reduce_min_ratio == 0
    path = os.path.join(mixed_folder, "fullres.jpeg")
    source = ImageFileSource(path, CaptureOptions())
    frame = _prepare(source, next(iter(source.jobs())), spec, None, full_display=True)
    assert frame.display is frame.grey and frame.grey.shape == (1400, 1700)
    assert np.array_equal(frame.network, resize_to_network(read_grey(path), spec))
