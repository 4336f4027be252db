"""One preprocessing definition: training-side evaluation and classify.py give the same probabilities.

The deployed network equalises its input itself and has its threshold folded into its output
(networks/deployable.py), so classify.py's probabilities are the training side's on the decision scale.
"""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest
import torch

from cxr_jetson.core.decision import fold_probabilities
from cxr_jetson.core.preprocess import load_for_network, normalize
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.networks.checkpoint import load_checkpoint, preprocess_spec
from cxr_jetson.networks.equalize import EqualizeHist
from cxr_jetson.networks.model import model_from_checkpoint
from cxr_jetson.train.dataset import load_split
from cxr_jetson.train.loop import predict_probabilities
from tests.conftest import run_script


@pytest.fixture(scope="module")
def evaluation_folder(tmp_path_factory) -> str:
    """A val-style folder with a full-resolution JPEG (reduced decode), a 224 px JPEG, 16-bit and RGBA PNGs."""
    root = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(11)
    for label, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        folder = root / "val" / label
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "IM-0001-0001.jpeg"), synthetic_xray(rng, pneumonia, 1500, 1800))
        cv2.imwrite(str(folder / "IM-0002-0001.jpeg"), cv2.resize(synthetic_xray(rng, pneumonia, 500, 600), (224, 224)))
        grey = synthetic_xray(rng, pneumonia, 600, 700)
        cv2.imwrite(str(folder / "IM-0003-0001.png"), grey.astype(np.uint16) * 64)
        cv2.imwrite(str(folder / "IM-0004-0001.png"), cv2.merge([grey, grey, grey, np.full_like(grey, 255)]))
    return str(root)


def test_training_evaluation_and_classify_agree(trained_model_dir, exported_onnx, evaluation_folder, tmp_path):
    checkpoint = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    spec = preprocess_spec(checkpoint)
    split = load_split(evaluation_folder, "val", checkpoint["classes"], spec, workers=2)
    model = model_from_checkpoint(checkpoint)
    training_side = dict(zip(split.paths, predict_probabilities(model, split, spec, "cpu", 4, False)))

    results = tmp_path / "results.csv"
    run = run_script("classify.py", evaluation_folder, "--model", exported_onnx, "--results", str(results), "-q")
    assert run.returncode == 0, run.stderr
    with open(results, newline="") as handle:
        device_side = {row["path"]: np.array([float(row["p_NORMAL"]), float(row["p_PNEUMONIA"])])
                       for row in csv.DictReader(handle)}
    assert set(device_side) == set(training_side) and len(device_side) == 8
    for path, probabilities in training_side.items():
        expected = fold_probabilities(probabilities[None], 1, checkpoint["threshold"])[0]
        np.testing.assert_allclose(device_side[path], expected, atol=2e-5, err_msg=path)


def test_network_input_is_identical_on_both_sides(exported_onnx, trained_model_dir, evaluation_folder):
    model = DeployedModel(exported_onnx)
    assert model.backend.info.graph_equalize == "hist" and model.spec.equalize == "none"  # never equalised twice
    training_spec = preprocess_spec(load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar")))
    path = os.path.join(evaluation_folder, "val", "PNEUMONIA", "IM-0001-0001.jpeg")
    split = load_split(evaluation_folder, "val", ["NORMAL", "PNEUMONIA"], training_spec, workers=1)
    cached = split.images[split.paths.index(path)].numpy()  # what training fed the network, equalised
    host = load_for_network(path, model.spec)               # what classify.py feeds the graph
    with torch.no_grad():
        in_graph = EqualizeHist(model.spec.mean, model.spec.std)(torch.from_numpy(normalize(host, model.spec)))
    np.testing.assert_allclose(in_graph.numpy(), normalize(cached, training_spec), atol=1e-6)
