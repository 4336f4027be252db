"""INT8 as a quantized ONNX: onnx_export.py --int8, its accuracy guard, and ONNX Runtime running it.

The session's model is tiny (64 px, a few validation images), so where a test needs the guard to pass it
opens the bounds, and where it needs a refusal it sets bounds no model can meet: what is tested is the
guard's arithmetic and that nothing is written outside the bounds. The guard refusing a bad calibration
of a real model is measured in the README's INT8 section.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest

from cxr_jetson.core.model_files import int8_model, locate_model
from cxr_jetson.core.model_info import ModelInfo
from cxr_jetson.core.names import FLOAT32_SCOPES, INT8_ONNX_SUFFIX
from cxr_jetson.export.int8_guard import GuardBounds, GuardReport, GuardRow
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from tests.conftest import run_script


def test_int8_onnx_is_quantized_where_it_should_be(int8_model_dir):
    path = int8_model(int8_model_dir)
    assert path.endswith(INT8_ONNX_SUFFIX) and locate_model(int8_model_dir) != path  # the FP32 one stays the default
    graph = onnx.load(path).graph
    quantized = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantized, "no Q/DQ nodes"
    outputs = {output.name for output in graph.output}
    convolutions = [node for node in graph.node if node.op_type == "Conv" and not outputs.intersection(node.output)]
    fed_by_dq = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    assert len(convolutions) == 20 and all(node.input[0] in fed_by_dq for node in convolutions)  # ResNet-18's, INT8
    in_float_scopes = [node for node in graph.node if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
                       and any(scope in node.name for scope in FLOAT32_SCOPES)]
    assert in_float_scopes and not any(set(node.input) & fed_by_dq for node in in_float_scopes)  # they stay float
    assert not any(set(node.input) & fed_by_dq for node in graph.node if outputs.intersection(node.output))
    zero_points = [init for init in graph.initializer if "zero_point" in init.name]
    assert all(onnx.numpy_helper.to_array(z).dtype == np.int8 for z in zero_points)  # TensorRT's signed form
    assert all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric


def test_int8_onnx_records_its_calibration_and_guard(int8_model_dir):
    info = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(int8_model(int8_model_dir)).metadata_props})
    fp32 = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(locate_model(int8_model_dir)).metadata_props})
    assert info.labels == fp32.labels and info.spec == fp32.spec and info.folded_threshold == fp32.folded_threshold
    record = info.quantization
    assert record["form"] == "tensorrt" and record["method"] == "minmax"
    assert record["calibration"]["images"] > 0 and len(record["calibration"]["manifest_sha256"]) == 64
    assert record["calibration"]["source"].endswith("train")  # calibrated on training images, guarded on validation
    sets = [row["name"] for row in record["guard"]["sets"]]
    assert sets == ["val", "val~contrast", "val~gamma", "val~noise", "val~resolution", "val~mixed"]
    assert record["guard"]["passed"] is True


def test_onnx_runtime_runs_int8_close_to_fp32(int8_model_dir, prepared_data):
    from cxr_jetson.core.preprocess import load_for_network, normalize
    from cxr_jetson.edge.backends import BackendOptions
    from cxr_jetson.edge.deployed_model import DeployedModel
    model = DeployedModel(int8_model_dir, "onnxruntime", options=BackendOptions(precision="int8"))
    reference = DeployedModel(int8_model_dir, "onnxruntime")
    assert model.backend.precision == "int8" and reference.backend.precision == "fp32"
    folder = os.path.join(prepared_data, "val", "PNEUMONIA")
    images = np.stack([load_for_network(os.path.join(folder, name), model.spec) for name in sorted(os.listdir(folder))])
    assert np.abs(model.probabilities(images) - reference.probabilities(images)).max() < 0.2
    session = onnxruntime.InferenceSession(int8_model(int8_model_dir), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input_0": normalize(images[:1], model.spec)})[0].shape == (1, 2)


def test_classify_runs_the_int8_model(int8_model_dir, prepared_data, tmp_path):
    image = os.path.join(prepared_data, "val", "NORMAL", sorted(os.listdir(os.path.join(prepared_data, "val", "NORMAL")))[0])
    result = run_script("classify.py", "--model", int8_model_dir, "--precision", "int8", "--no-gate", image,
                        str(tmp_path / "out.jpg"))
    assert result.returncode == 0, result.stderr
    assert "int8" in result.stdout and os.path.isfile(tmp_path / "out.jpg")


def test_missing_int8_model_is_a_one_line_error(trained_model_dir, prepared_data, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(trained_model_dir, model_dir)
    export_onnx(ExportOptions(model_dir=model_dir))
    image = os.path.join(prepared_data, "val", "NORMAL", sorted(os.listdir(os.path.join(prepared_data, "val", "NORMAL")))[0])
    result = run_script("classify.py", "--model", model_dir, "--precision", "int8", image, str(tmp_path / "o.jpg"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--int8" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_guard_outside_its_bounds_writes_nothing_unless_forced(trained_model_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(trained_model_dir, model_dir)
    impossible = ("--max-auc-drop", "-1")  # no model's AUC rises by a whole unit: the guard must refuse
    refused = run_script("onnx_export.py", "--model-dir", model_dir, "--int8", *impossible)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "guard's bounds" in refused.stderr and "not written" in refused.stderr
    assert not [name for name in os.listdir(model_dir) if name.endswith(INT8_ONNX_SUFFIX) or ".tmp" in name]
    forced = run_script("onnx_export.py", "--model-dir", model_dir, "--int8", *impossible, "--force-int8")
    assert forced.returncode == 0, forced.stderr
    record = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(int8_model(model_dir)).metadata_props})
    assert record.quantization["guard"]["passed"] is False  # the record says it was forced


def test_guard_bounds_on_flips_and_refusals_not_on_referrals():
    def row(flipped: int, refusals: int, referrals: int, auc: float) -> GuardRow:
        return GuardRow("val", {"n": 200, "auc": 0.98}, {"n": 200, "auc": auc}, flipped, refusals, referrals)
    bounds = GuardBounds(max_auc_drop=0.005, max_changed=0.01)
    assert GuardReport([row(2, 2, 30, 0.976)], bounds).failures() == []
    failures = GuardReport([row(3, 0, 0, 0.98), row(0, 3, 0, 0.98), row(0, 0, 0, 0.974)], bounds).failures()
    assert len(failures) == 3 and "AUC down" in failures[2]
    assert json.dumps(GuardReport([row(0, 0, 0, 0.98)], bounds).record())  # the record is plain JSON


def test_calibration_folder_without_images_is_a_one_line_error(trained_model_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(trained_model_dir, model_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("onnx_export.py", "--model-dir", model_dir, "--int8", "--calibration-images", str(empty))
    assert result.returncode != 0 and "Traceback" not in result.stderr and "calibration" in result.stderr


def test_int8_model_from_an_earlier_export_is_refused(int8_model_dir, tmp_path):
    from cxr_jetson.edge.backends import BackendError, BackendOptions, open_backend
    model_dir = str(tmp_path / "model")
    shutil.copytree(int8_model_dir, model_dir)
    open_backend("onnxruntime", model_dir, BackendOptions(precision="int8")).close()  # it matches its FP32 ONNX
    export_onnx(ExportOptions(model_dir=model_dir, fold_threshold=False))  # the FP32 ONNX changes, the INT8 stays
    with pytest.raises(BackendError, match="quantized from an earlier"):
        open_backend("onnxruntime", model_dir, BackendOptions(precision="int8"))
