"""onnx_export.py: the ONNX contract (names, shapes, opset, metadata) and its built-in verification."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from cxr_jetson.core.decision import fold_probabilities
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.export.graph import DEFAULT_OPSET, ExportError
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.networks.equalize import EqualizeHist
from cxr_jetson.networks.model import model_from_checkpoint
from tests.conftest import RESOLUTION, run_script


def _dims(value_info) -> list:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def test_onnx_follows_the_jetson_inference_contract(exported_onnx):
    assert os.path.basename(exported_onnx) == "resnet18.onnx"
    model = onnx.load(exported_onnx)
    onnx.checker.check_model(model)
    assert [(i.name, _dims(i)) for i in model.graph.input] == [("input_0", [1, 3, RESOLUTION, RESOLUTION])]
    side = RESOLUTION // 32  # ResNet's last feature map
    assert [(o.name, _dims(o)) for o in model.graph.output] == [("output_0", [1, 2]), ("cam_0", [1, 2, side, side])]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == DEFAULT_OPSET
    assert next(n for n in model.graph.node if "output_0" in n.output).op_type == "Softmax"


def test_only_output_0_can_be_requested_as_jetson_inference_does(exported_onnx):
    session = onnxruntime.InferenceSession(exported_onnx, providers=["CPUExecutionProvider"])
    probabilities = session.run(["output_0"], {"input_0": np.zeros((1, 3, RESOLUTION, RESOLUTION), np.float32)})
    assert len(probabilities) == 1 and probabilities[0].shape == (1, 2)


def test_cam_is_exact_for_the_logits(exported_onnx, trained_model_dir):
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    bias = best["state_dict"]["fc.bias"].numpy().copy()
    bias[1] -= np.log(best["threshold"] / (1 - best["threshold"]))  # the deployed head has the threshold folded in
    batch = np.random.default_rng(1).normal(size=(1, 3, RESOLUTION, RESOLUTION)).astype(np.float32)
    session = onnxruntime.InferenceSession(exported_onnx, providers=["CPUExecutionProvider"])
    probabilities, cam = session.run(["output_0", "cam_0"], {"input_0": batch})
    logits = cam.mean(axis=(2, 3)) + bias  # global average pool of the map + bias = the head's logits
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(softmax, probabilities, atol=1e-5)


def test_no_cam_export_has_the_single_jetson_output(trained_model_dir, tmp_path):
    output = str(tmp_path / "plain.onnx")
    result = run_script("onnx_export.py", "--model-dir", trained_model_dir, "--no-cam", "--output", output)
    assert result.returncode == 0, result.stderr
    assert [o.name for o in onnx.load(output).graph.output] == ["output_0"]


def test_onnx_describes_itself(exported_onnx, trained_model_dir):
    metadata = {entry.key: entry.value for entry in onnx.load(exported_onnx).metadata_props}
    info = ModelInfo.from_metadata(metadata)
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    assert info.labels == ["NORMAL", "PNEUMONIA"] and info.positive_class == "PNEUMONIA"
    # The threshold is folded into output_0: argmax (0.5) decides as p >= the chosen threshold.
    assert info.folded_threshold == pytest.approx(best["threshold"]) and info.threshold == 0.5
    assert info.graph_equalize == "hist" and info.spec.equalize == "none"  # the graph equalises, not the host
    assert info.spec.resolution == RESOLUTION and info.arch == "resnet18"
    assert info.provenance["epoch"] == best["epoch"] and len(info.provenance["checkpoint_sha256"]) == 64


def test_onnx_runtime_gives_torch_probabilities(exported_onnx, trained_model_dir):
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    model = model_from_checkpoint(best)
    batch = np.random.default_rng(0).normal(size=(1, 3, RESOLUTION, RESOLUTION)).astype(np.float32)
    with torch.inference_mode():  # the graph's own parts, composed here: equalise, classify, fold the threshold
        equalised = EqualizeHist(PreprocessSpec().mean, PreprocessSpec().std)(torch.from_numpy(batch))
        expected = fold_probabilities(torch.softmax(model(equalised), 1).numpy(), 1, best["threshold"])
    session = onnxruntime.InferenceSession(exported_onnx, providers=["CPUExecutionProvider"])
    actual = session.run(["output_0"], {"input_0": batch})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert actual.sum() == pytest.approx(1.0, abs=1e-5)


def test_dynamic_batch_export_runs_any_batch(trained_model_dir, tmp_path):
    output = str(tmp_path / "dynamic.onnx")
    result = run_script("onnx_export.py", "--model-dir", trained_model_dir, "--dynamic-batch", "--output", output)
    assert result.returncode == 0, result.stderr
    assert "max |ONNX Runtime - torch|" in result.stdout
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    assert session.run(None, {"input_0": np.zeros((3, 3, RESOLUTION, RESOLUTION), np.float32)})[0].shape == (3, 2)


def test_dataparallel_checkpoint_exports(trained_model_dir, tmp_path):
    checkpoint = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    checkpoint["state_dict"] = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
    path = tmp_path / "ddp.pth.tar"
    torch.save(checkpoint, path)
    assert os.path.isfile(export_onnx(ExportOptions(input=str(path), output=str(tmp_path / "ddp.onnx"))))


def test_failed_verification_keeps_no_file(trained_model_dir, tmp_path):
    output = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match="disagree"):
        export_onnx(ExportOptions(model_dir=trained_model_dir, output=str(output), tolerance=-1))
    assert not output.exists() and os.listdir(tmp_path) == []


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_script("onnx_export.py", "--model-dir", str(tmp_path))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_metadata_is_plain_json(exported_onnx):
    metadata = {entry.key: entry.value for entry in onnx.load(exported_onnx).metadata_props}
    assert json.loads(metadata["cxr.labels"]) == ["NORMAL", "PNEUMONIA"]
    assert json.loads(metadata["cxr.preprocess"])["mean"] == [0.485, 0.456, 0.406]
