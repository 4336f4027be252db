"""The ONNX Runtime back-end equalises on the host and runs the graph from there: the same numbers as the
whole graph, bit for bit, on the FP32 and INT8 models, for X-rays and the frames equalisation must get
right (flat, two-level, narrow-band, full-range noise)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from cxr_jetson.core.names import INPUT_NAME
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.edge.backends import BackendOptions
from cxr_jetson.edge.backends.host_equalize import host_equalized, split_at_equalisation
from cxr_jetson.edge.backends.ort_backend import OnnxRuntimeBackend
from cxr_jetson.export.graph import DEFAULT_OPSET, export_graph
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.networks.equalize import EqualizeHist
from tests.conftest import RESOLUTION
from tests.test_jetson_workflow import _test_images


def _whole_graph(backend: OnnxRuntimeBackend, batch: np.ndarray):
    session = onnxruntime.InferenceSession(backend.model_file, providers=["CPUExecutionProvider"])
    return session.run(backend.output_names, {INPUT_NAME: batch})


@pytest.mark.parametrize("resolution", [64, 224])
def test_host_equalisation_is_the_layers_output_exactly(resolution, tmp_path):
    spec = PreprocessSpec(resolution=resolution)
    path = str(tmp_path / "equalize.onnx")
    export_graph(EqualizeHist(spec.mean, spec.std).eval(), resolution, path, DEFAULT_OPSET, dynamic_batch=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    mean, std = (np.asarray(v, np.float32).reshape(1, 3, 1, 1) for v in (spec.mean, spec.std))
    for image in _test_images(resolution):
        batch = normalize(image, spec)
        np.testing.assert_array_equal(host_equalized(batch, mean, std), session.run(None, {INPUT_NAME: batch})[0])


@pytest.mark.parametrize("model, precision", [("exported_onnx", "fp32"), ("gated_model", "fp32"),
                                              ("int8_model_dir", "int8")])
def test_split_graph_answers_as_the_whole_graph(model, precision, request):
    backend = OnnxRuntimeBackend(request.getfixturevalue(model), BackendOptions(precision=precision))
    assert backend.split is not None and "equalisation on the host" in backend.describe()
    assert backend.split.needs_input == backend.has_gate  # the gate reads input_0's grey-level spread itself
    spec = backend.info.spec
    for image in _test_images(RESOLUTION):  # one at a time, as the runner's batch of one
        batch = normalize(image, spec)
        for split, whole in zip(backend.run_all(batch), _whole_graph(backend, batch)):
            np.testing.assert_array_equal(split, whole)


def test_the_cut_keeps_the_models_metadata_and_drops_the_equalisation(gated_model):
    path = os.path.join(gated_model, "resnet18.onnx")
    whole = onnx.load(path)
    split = split_at_equalisation(path)
    trunk = onnx.load_from_string(split.trunk)
    assert not any(node.name.startswith("/equalize/") for node in trunk.graph.node)
    assert ({node.name for node in whole.graph.node if node.name.startswith("/classifier/")}
            <= {node.name for node in trunk.graph.node})
    assert [i.name for i in trunk.graph.input] == [INPUT_NAME, split.boundary]
    assert [o.name for o in trunk.graph.output] == [o.name for o in whole.graph.output]
    assert {p.key: p.value for p in trunk.metadata_props} == {p.key: p.value for p in whole.metadata_props}


def test_a_model_without_equalisation_runs_whole(trained_model_dir, tmp_path):
    model_dir = str(tmp_path / "plain")
    shutil.copytree(trained_model_dir, model_dir, ignore=shutil.ignore_patterns("*.onnx", "input_gate.npz"))
    best = os.path.join(model_dir, "model_best.pth.tar")
    checkpoint = load_checkpoint(best)
    checkpoint["preprocess"] = dict(checkpoint["preprocess"], equalize="none")
    torch.save(checkpoint, best)
    backend = OnnxRuntimeBackend(export_onnx(ExportOptions(model_dir=model_dir)))
    assert backend.split is None and "host" not in backend.describe()
    assert split_at_equalisation(backend.model_file) is None


def test_the_back_end_names_the_models_own_input_when_it_runs_the_cut_graph(trained_model_dir, tmp_path):
    """jetson-inference's --input_blob is checked against this name. Without the input gate, the cut graph
    reads only the equalisation's output; the model's input is still input_0."""
    onnx_path = export_onnx(ExportOptions(model_dir=trained_model_dir, output=str(tmp_path / "plain.onnx"),
                                          gate=False, cam=False))
    backend = OnnxRuntimeBackend(onnx_path)
    assert backend.split is not None and not backend.split.needs_input
    assert backend.input_name == INPUT_NAME
