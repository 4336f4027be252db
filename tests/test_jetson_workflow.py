"""jetson-inference's classification workflow, verbatim, and an ONNX that decides in imagenet.py as in
classify.py: the in-graph equalisation, the folded threshold, and the imagenet.py emulator."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision

from bench.imagenet_emulator import ImageNetEmulator, network_input, point_sample_indices, top_class
from cxr_jetson.core.decision import DecisionRule, fold_probabilities, folded
from cxr_jetson.core.names import FLOAT32_SCOPES
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, normalize
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.tensorrt.fp16_onnx import fp16_model
from cxr_jetson.export.graph import DEFAULT_OPSET, export_graph
from cxr_jetson.networks.equalize import EqualizeHist
from tests.conftest import REPO, run_script


def _test_images(resolution: int) -> np.ndarray:
    """Drawn X-rays, a flat frame, two-level and narrow-band noise: the cases equalisation must get right."""
    rng = np.random.default_rng(resolution)
    images = [cv2.resize(synthetic_xray(rng, i % 2 == 1, 480, 560), (resolution, resolution),
                         interpolation=cv2.INTER_AREA) for i in range(10)]
    images += [np.full((resolution, resolution), 77, np.uint8),
               np.where(rng.random((resolution, resolution)) > 0.5, 10, 200).astype(np.uint8),
               (rng.random((resolution, resolution)) * 30 + 100).astype(np.uint8),
               (rng.random((resolution, resolution)) * 256).astype(np.uint8)]
    return np.stack(images)


@pytest.mark.parametrize("resolution", [64, 128, 224])
def test_in_graph_equalisation_is_opencvs_exactly(resolution, tmp_path):
    spec = PreprocessSpec(resolution=resolution)
    images = _test_images(resolution)
    module = EqualizeHist(spec.mean, spec.std).eval()
    path = str(tmp_path / "equalize.onnx")
    export_graph(module, resolution, path, DEFAULT_OPSET, dynamic_batch=False)  # the exporter onnx_export.py uses
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = np.stack([cv2.equalizeHist(image) for image in images])
    for image, reference in zip(images, expected):
        out = session.run(None, {"input_0": normalize(image, spec)})[0][0, 0]
        grey = np.rint((out * spec.std[0] + spec.mean[0]) * 255)
        assert np.abs(grey - reference).max() == 0  # the target is one grey level; it is exact
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert not ops & {"CumSum", "ScatterElements", "ScatterND", "TopK", "Loop", "GatherElements"}


def test_the_folded_threshold_makes_argmax_the_thresholded_decision(exported_onnx, trained_model_dir, prepared_data):
    from cxr_jetson.networks.checkpoint import load_checkpoint
    threshold = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))["threshold"]
    model = DeployedModel(exported_onnx, "onnxruntime")
    assert model.folded_threshold == pytest.approx(threshold) and model.rule.threshold == 0.5
    paths = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(prepared_data, "val")) for name in names
             if name.endswith(".jpeg")]
    images = np.stack([load_for_network(path, model.spec) for path in paths])
    rng = np.random.default_rng(0)
    images = np.concatenate([images, (rng.random((24,) + images.shape[1:]) * 255).astype(np.uint8)])
    output = model.probabilities(images)
    thresholded = model.rule.classes(output)
    assert np.array_equal(output.argmax(1), thresholded)  # what imagenet.py decides is what classify.py decides
    # ... and what the unfolded probability against the chosen threshold decides, for every image not
    # tied with the threshold to float32 resolution (a tie goes to the first class, as in imageNet)
    unfolded = fold_probabilities(output, 1, 1 - threshold)  # folding by 1 - t undoes folding by t
    clear = np.abs(output[:, 1] - output[:, 0]) > 1e-6
    assert np.array_equal((unfolded[:, 1] >= threshold)[clear], (thresholded == 1)[clear])
    assert folded(threshold, threshold) == pytest.approx(0.5) and folded(0.9, threshold) > 0.5


def test_a_threshold_given_on_the_command_line_moves_onto_the_models_scale(exported_onnx):
    model = DeployedModel(exported_onnx, "onnxruntime", threshold=0.7)
    assert model.rule.threshold == pytest.approx(folded(0.7, model.folded_threshold))
    assert DecisionRule.for_model(["NORMAL", "PNEUMONIA"], None, None).threshold == 0.5


def test_at_the_folded_cut_off_a_tie_goes_where_imagenet_sends_it():
    ties = np.array([[0.5, 0.5], [0.49999997, 0.5], [0.5, 0.49999997]], np.float32)
    imagenet = [top_class(row)[0] for row in ties]
    assert imagenet == [0, 1, 0]
    for labels in (["NORMAL", "PNEUMONIA"], ["PNEUMONIA", "NORMAL"]):
        assert DecisionRule.for_model(labels, "PNEUMONIA", 0.5).classes(ties).tolist() == imagenet
    # away from 0.5 the rule stays "at or above the threshold"
    assert DecisionRule.for_model(["NORMAL", "PNEUMONIA"], "PNEUMONIA", 0.3).classes(
        np.array([[0.7, 0.3]], np.float32)).tolist() == [1]


def test_fp16_networks_keep_the_equalisation_in_float32(exported_onnx):
    graph = fp16_model(onnx.load(exported_onnx)).graph
    half = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    halved = {out for node in graph.node if node.op_type == "Cast"
              and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute) for out in node.output}
    scope = [node for node in graph.node if node.name.startswith(FLOAT32_SCOPES)]
    assert scope and not any(set(node.input) & (half | halved) for node in scope)
    assert half  # the classifier itself is FP16


def test_the_emulator_samples_as_jetson_utils_does():
    assert point_sample_indices(62, 224)[112] == 30  # float32 arithmetic: exact maths would give 31
    assert list(point_sample_indices(500, 224)[:6]) == [0, 2, 4, 6, 8, 11]  # top-left aligned, no half-pixel offset
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :, 0] = np.arange(6) * 40
    tensor = network_input(rgb, 3, 2)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, 0, 0], (np.array([0, 80, 160]) / 255 - 0.485) / 0.229, rtol=1e-6)
    assert top_class(np.array([0.4, 0.4, 0.2])) == (0, pytest.approx(0.4))  # a tie keeps the lower index
    assert top_class(np.array([0.005, 0.004]))[0] == -1  # below imagenet.py's 0.01: no class


def _tutorial_data(root) -> None:
    """jetson-inference's tutorial layout: DIR/{train,val,test}/<Class>/ and DIR/labels.txt.

    The test images are drawn at the network's 224 x 224, so imagenet.py's point sampling and classify.py's
    area resize read the same pixels and the two decisions must agree exactly, whatever model the unseeded
    tutorial run trains. At other sizes the two resamplings differ, and an image whose probability sits
    near the threshold may be decided differently; bench/jetson_agreement.py measures that on real X-rays."""
    rng = np.random.default_rng(3)
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        height, width = (224, 224) if split == "test" else (200, 240)
        for label in ("Normal", "Pneumonia"):
            folder = root / "data" / "xray" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                cv2.imwrite(str(folder / f"{index}.jpg"), synthetic_xray(rng, label == "Pneumonia", height, width))
    (root / "data" / "xray" / "labels.txt").write_text("Normal\nPneumonia\n")


def test_the_tutorials_three_commands_run_verbatim(tmp_path):
    _tutorial_data(tmp_path)
    # The tutorial starts from ImageNet weights; offline, torchvision finds them where its download goes.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    env = dict(os.environ, PYTHONPATH=REPO, TORCH_HOME=str(tmp_path / "torch"), HTTPS_PROXY="http://127.0.0.1:9",
               NET="models/xray", DATASET="data/xray")

    def run(*command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(" ".join(command), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        return result

    trained = run(sys.executable, os.path.join(REPO, "train.py"), "--model-dir=models/xray data/xray --epochs=35",
                  "--batch-size=1 --workers=1")
    assert "=> Epoch 34" in trained.stdout and "--batch-size 1: batch norm statistics" in trained.stdout
    run(sys.executable, os.path.join(REPO, "onnx_export.py"), "--model-dir=models/xray")
    image = "data/xray/test/Pneumonia/0.jpg"
    classified = run(sys.executable, os.path.join(REPO, "classify.py"), "--model=$NET/resnet18.onnx",
                     "--input_blob=input_0 --output_blob=output_0 --labels=$DATASET/labels.txt", image, "out.jpg",
                     "--results results.csv")
    assert (tmp_path / "out.jpg").is_file() and "classify:" in classified.stdout
    with open(tmp_path / "results.csv", newline="") as handle:
        ours = next(csv.DictReader(handle))
    emulator = ImageNetEmulator(str(tmp_path / "models/xray/resnet18.onnx"), str(tmp_path / "data/xray/labels.txt"))
    theirs, confidence = emulator.classify(str(tmp_path / image))
    assert emulator.labels[theirs] == ours["label"]  # imagenet.py would decide the same


def test_a_wrong_blob_name_is_one_line_naming_the_right_one(exported_onnx, prepared_data):
    image = next(os.path.join(root, name) for root, _, names in os.walk(prepared_data) for name in names
                 if name.endswith(".jpeg"))
    result = run_script("classify.py", image, "--model", exported_onnx, "--input_blob=data", "--output-blob=prob")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--input_blob=data" in result.stderr and "its input is input_0" in result.stderr
    good = run_script("classify.py", image, "--network", exported_onnx, "--input-blob", "input_0",
                      "--output_blob=output_0")
    assert good.returncode == 0, good.stderr


def test_jetson_inference_flags_are_taken_or_refused_in_one_line(trained_model_dir, tmp_path):
    refused = run_script("onnx_export.py", "--model-dir", trained_model_dir, "--no-activation")
    assert refused.returncode == 2 and "always ends in softmax" in refused.stderr
    multi = run_script("train.py", str(tmp_path), "--model-dir", str(tmp_path / "m"), "--multi-label")
    assert multi.returncode == 2 and "--multi-label" in multi.stderr and "Traceback" not in multi.stderr
    start = run_script("train.py", str(tmp_path), "--model-dir", str(tmp_path / "m"), "--start-epoch=3",
                       "--no-pretrained")
    assert start.returncode == 2 and "this run starts at epoch 0" in start.stderr


def test_training_also_sees_nearest_point_sampling():
    from cxr_jetson.train.augment import AUGMENTATIONS, AugmentConfig, augment_batch
    assert AUGMENTATIONS["strong"].nearest > 0 and AUGMENTATIONS["light"].nearest == 0
    images = torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)
    spec = PreprocessSpec(resolution=48)
    zoomed = AugmentConfig(scale=(1.3, 1.3), aspect=(1, 1), rotation_degrees=7, translate=0, hflip=0, brightness=0,
                           contrast=(1, 1), gamma=(1, 1), nearest=1.0)
    out = augment_batch(images, spec, zoomed, torch.Generator().manual_seed(1))
    grey = np.rint(((out[:, 0].numpy() * spec.std[0]) + spec.mean[0]) * 255)
    for sampled, source in zip(grey, images.numpy()):  # every pixel is one of the source's: nothing interpolated
        assert set(np.unique(sampled)) <= set(np.unique(source)) | {0}
    bilinear = augment_batch(images, spec, AugmentConfig(**{**zoomed.__dict__, "nearest": 0.0}),
                             torch.Generator().manual_seed(1))
    assert not torch.equal(out, bilinear)
