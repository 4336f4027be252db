"""The input gate: its rule (core/input_gate.py), its layers against an independent numpy computation
(networks/input_gate.py), its fitting (train/input_gate.py), and classify.py answering NOT ASSESSED and
REFER with a gated ONNX, or every input with --no-gate."""
from __future__ import annotations

import csv
import os
import shutil

import cv2
import numpy as np
import onnx
import pytest
import torch

from cxr_jetson.core.decision import DecisionRule
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.input_gate import (
    GATE_COLUMNS,
    NOT_A_CHEST_XRAY,
    STATUS_DECIDED,
    STATUS_NOT_ASSESSED,
    STATUS_REFER,
    GatePolicy,
    colourfulness,
    frame_refusal,
    layout_margin,
    parse_age_range,
    score_refusal,
    verdict,
)
from cxr_jetson.core.names import BEST_CHECKPOINT, GATE_NAME
from cxr_jetson.networks.input_gate import GATE_FILE, GateScores, GateStatistics, standardised_layout
from cxr_jetson.train.input_gate import GateDataError, fit_gate, refer_band
from tests.conftest import run_script
from tests.test_tensorrt import needs_rtx

POLICY = GatePolicy(mahalanobis=3.0, layout_margin=0.0, refer_band=(0.4, 0.6))


def _row(**values: float) -> np.ndarray:
    defaults = dict(mahalanobis=1.0, energy=-2.0, layout_upright=0.8, layout_rot90=0.1, layout_rot180=0.3,
                    layout_rot270=-0.1, grey_std=50.0)
    defaults.update(values)
    return np.array([defaults[name] for name in GATE_COLUMNS], np.float32)


@pytest.mark.parametrize("values, reason", [
    ({}, None),
    ({"grey_std": 1.0}, "blank frame"),
    ({"grey_std": float("nan")}, "blank frame"),
    ({"layout_upright": -0.7}, "inverted (negative) image"),
    ({"layout_upright": 0.2, "layout_rot90": -0.6}, "rotated image (90 degrees)"),
    ({"layout_upright": 0.35, "layout_rot180": 0.3, "layout_rot90": 0.0}, None),
    ({"mahalanobis": 7.0}, NOT_A_CHEST_XRAY),
])
def test_score_rule_refuses_in_order(values, reason):
    assert score_refusal(_row(**values), POLICY) == reason


def test_layout_margin_names_the_alternative_only_when_it_fits_better():
    margin, reason = layout_margin(_row(layout_upright=0.3, layout_rot180=0.2))
    assert margin == pytest.approx(0.1) and reason == "not laid out like a frontal chest X-ray"
    margin, reason = layout_margin(_row(layout_upright=0.1, layout_rot270=0.5))
    assert margin == pytest.approx(-0.4) and reason == "rotated image (270 degrees)"


def test_colourfulness_is_zero_for_grey_and_high_for_a_photo():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (300, 400), np.uint8)
    assert colourfulness(grey) == 0.0
    assert colourfulness(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)) == 0.0
    photo = rng.integers(0, 256, (300, 400, 3), np.uint8)
    assert colourfulness(photo) > 50
    assert frame_refusal((300, 400), colourfulness(photo), 224, POLICY) == "colour image, not a grey X-ray"
    assert frame_refusal((100, 400), 0.0, 224, POLICY) == "too small (400x100 px)"
    assert frame_refusal((112, 112), 0.0, 224, POLICY) is None


def test_verdicts_and_their_text():
    rule = DecisionRule.for_model(["NORMAL", "PNEUMONIA"], "PNEUMONIA", 0.5)
    prediction = rule.decide(np.array([0.3, 0.7]))
    assert verdict(prediction, 0.7, _row(), POLICY).text() == "70.00% PNEUMONIA"
    refer = verdict(prediction, 0.55, _row(), POLICY)
    assert refer.status == STATUS_REFER and refer.text() == "REFER (70.00% PNEUMONIA)"
    refused = verdict(prediction, 0.7, _row(mahalanobis=9.0), POLICY)
    assert refused.status == STATUS_NOT_ASSESSED and refused.prediction is None
    assert refused.text() == "NOT ASSESSED: not a chest X-ray"
    host = verdict(prediction, 0.7, _row(), POLICY, refusal="colour image, not a grey X-ray", warnings=["age"])
    assert host.text() == "NOT ASSESSED: colour image, not a grey X-ray" and host.warnings == ("age",)
    assert verdict(prediction, 0.5, None, None).status == STATUS_DECIDED  # no gate: every input answered


def test_policy_round_trips_and_bad_records_are_one_line_errors():
    policy = GatePolicy(mahalanobis=2.5, layout_margin=-0.1, refer_band=(0.45, 0.55), age_range_years=(1.0, 5.0),
                        fitted={"train_images": 10})
    assert GatePolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ToolkitError, match="cxr.gate"):
        GatePolicy.from_json('{"mahalanobis": 1}')
    assert parse_age_range("1-5") == (1.0, 5.0)
    with pytest.raises(ToolkitError, match="population-age"):
        parse_age_range("five")


def test_refer_band_refers_half_the_mistakes_within_the_coverage_floor():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 4000)
    logits = rng.normal(np.where(labels == 1, 2.0, -2.0), 1.5)
    decision = 1 / (1 + np.exp(-logits))
    low, high = refer_band(decision, labels, positive=1)
    assert low == pytest.approx(1 - high)
    wrong = (decision >= 0.5) != (labels == 1)
    referred = (decision > low) & (decision < high)
    assert (wrong & referred).sum() >= 0.5 * wrong.sum()
    assert referred.mean() <= 0.2 + 1e-9
    assert refer_band(decision, (decision >= 0.5).astype(int), positive=1) == (0.5, 0.5)  # no mistakes: no band


def test_gate_layers_match_an_independent_numpy_computation():
    rng = np.random.default_rng(2)
    features, classes, side, grid = 6, 2, 32, 16
    covariance = np.cov(rng.normal(size=(features, 50)))
    precision = np.linalg.inv(covariance)
    means = rng.normal(size=(classes, features))
    layout = rng.normal(size=(grid, grid))
    statistics = GateStatistics(means, np.linalg.cholesky(precision), layout / np.linalg.norm(layout), POLICY)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    layers = GateScores(statistics, mean, std)
    raw = torch.from_numpy(rng.normal(size=(3, 3, side, side)).astype(np.float32))
    seen = torch.from_numpy(rng.normal(size=(3, 3, side, side)).astype(np.float32))
    pooled = rng.normal(size=(3, features)).astype(np.float32)
    logits = rng.normal(size=(3, classes)).astype(np.float32)
    scores = layers(raw, seen, torch.from_numpy(pooled), torch.from_numpy(logits)).numpy()
    for n in range(3):
        distances = [(pooled[n] - m) @ precision @ (pooled[n] - m) / features for m in means]
        assert scores[n, 0] == pytest.approx(min(distances), rel=1e-4)
        assert scores[n, 1] == pytest.approx(-np.log(np.exp(logits[n]).sum()), rel=1e-5)
        cells = seen[n, 0].numpy().reshape(grid, side // grid, grid, side // grid).mean(axis=(1, 3))
        cells = (cells - cells.mean()) / np.linalg.norm(cells - cells.mean())
        for k in range(4):
            assert scores[n, 2 + k] == pytest.approx(float((cells * np.rot90(statistics.layout, k)).sum()), abs=1e-5)
        grey = (raw[n, 0].numpy() * std[0] + mean[0]) * 255
        assert scores[n, 6] == pytest.approx(grey.std(), rel=1e-4)
    assert standardised_layout(seen, grid).shape == (3, grid * grid)


def test_too_little_data_fits_no_gate(trained_model_dir, prepared_data):
    from cxr_jetson.networks.checkpoint import load_checkpoint
    with pytest.raises(GateDataError, match="too few images"):
        fit_gate(load_checkpoint(os.path.join(trained_model_dir, BEST_CHECKPOINT)), prepared_data)
    assert not os.path.exists(os.path.join(trained_model_dir, GATE_FILE))  # train.py fitted none either


def _results(folder: str) -> dict:
    with open(os.path.join(folder, "results.csv"), newline="") as handle:
        return {os.path.basename(row["path"]): row for row in csv.DictReader(handle)}


def test_gated_onnx_has_the_gate_output_and_its_policy(gated_model):
    model = onnx.load(os.path.join(gated_model, "resnet18.onnx"))
    outputs = [output.name for output in model.graph.output]
    assert outputs[-1] == GATE_NAME and outputs[0] == "output_0"
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    policy = GatePolicy.from_json(metadata["cxr.gate"])
    assert policy.age_range_years == (1.0, 5.0) and policy.refer_band[0] <= 0.5 <= policy.refer_band[1]


def test_classify_refuses_what_the_model_was_not_made_for(gated_model, prepared_data, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    normals = os.path.join(prepared_data, "val", "NORMAL")
    xray = cv2.imread(os.path.join(normals, sorted(os.listdir(normals))[0]), cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(3)
    cv2.imwrite(str(folder / "blank.png"), np.full((300, 300), 128, np.uint8))
    cv2.imwrite(str(folder / "photo.jpg"), rng.integers(0, 256, (300, 300, 3), np.uint8))
    cv2.imwrite(str(folder / "inverted.png"), 255 - xray)
    out = tmp_path / "out"
    result = run_script("classify.py", str(folder), str(out), "--model", gated_model)
    assert result.returncode == 0, result.stderr
    rows = _results(str(out))
    assert rows["blank.png"]["status"] == STATUS_NOT_ASSESSED and rows["blank.png"]["reason"] == "blank frame"
    assert rows["photo.jpg"]["reason"] == "colour image, not a grey X-ray"
    assert rows["inverted.png"]["reason"] == "inverted (negative) image"
    for row in rows.values():  # no class is given for input the model could not read
        assert row["label"] == "" and row["confidence"] == "" and row["gate_mahalanobis"] != ""
    assert "NOT ASSESSED: blank frame" in result.stdout and "3 NOT ASSESSED" in result.stdout
    drawn = cv2.imread(str(out / "blank.png"))
    assert (np.abs(drawn.astype(int) - 128).max(axis=2) > 40).any()  # the reason is drawn on the image
    ungated = tmp_path / "ungated"
    result = run_script("classify.py", str(folder), str(ungated), "--model", gated_model, "--no-gate")
    assert result.returncode == 0, result.stderr
    assert {row["status"] for row in _results(str(ungated)).values()} == {"ok"}
    assert all(row["label"] for row in _results(str(ungated)).values())


def test_a_dicom_header_is_gated_and_an_age_outside_the_population_flagged(gated_model, tmp_path):
    from tests.test_dicom import make_dicom
    folder = tmp_path / "dicom"
    folder.mkdir()
    pixels = (np.tile(np.linspace(0, 4000, 128), (128, 1)) + np.random.default_rng(4).normal(0, 300, (128, 128)))
    make_dicom(str(folder / "lateral.dcm"), pixels.clip(0, 4095).astype(np.uint16), 12, ViewPosition="LL")
    make_dicom(str(folder / "adult.dcm"), pixels.clip(0, 4095).astype(np.uint16), 12, PatientAge="045Y")
    result = run_script("classify.py", str(folder), "--model", gated_model, "--results", str(tmp_path / "r.csv"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = {os.path.basename(row["path"]): row for row in csv.DictReader(handle)}
    assert rows["lateral.dcm"]["status"] == STATUS_NOT_ASSESSED
    assert rows["lateral.dcm"]["reason"] == "lateral view (ViewPosition LL)"
    assert rows["adult.dcm"]["warnings"] == "patient age 45Y outside the 1-5 years the model was trained on"
    assert "[warning: patient age 45Y" in result.stdout



@needs_rtx
def test_the_gated_onnx_builds_with_tensorrt_rtx(gated_model, tmp_path):
    folder = tmp_path / "rtx"
    folder.mkdir()
    onnx_copy = shutil.copy(os.path.join(gated_model, "resnet18.onnx"), folder)
    result = run_script("trt_build.py", "--onnx", onnx_copy, "--compute-capability", "SM86",
                        env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "engine written to" in result.stdout
