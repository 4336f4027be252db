"""Transfer-learning options: every architecture end to end, freezing modes, schedules, early stopping,
resume across an unfreeze, the comparison report and the model card."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.edge.classify import get_args_parser as classify_parser
from cxr_jetson.edge.classify import main as classify_main
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from cxr_jetson.networks.architectures import ARCHITECTURES, CompactCNN
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.networks.model import build_model
from cxr_jetson.train import finetune
from cxr_jetson.train.args import get_args_parser as train_parser
from cxr_jetson.train.config import TrainConfig
from cxr_jetson.train.main import main as train_main
from tests.conftest import run_script
from tests.test_resume import kill_during_epoch

try:
    import timm  # noqa: F401
    TIMM = True
except ImportError:
    TIMM = False


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    """A few generated X-rays per class and split, in the standard layout."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(5)
    for split, count in (("train", 6), ("val", 3)):
        for label in ("NORMAL", "PNEUMONIA"):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                cv2.imwrite(str(root / split / label / f"{index}.jpeg"),
                            synthetic_xray(rng, label == "PNEUMONIA", 160, 200))
    return str(root)


def _train(data: str, model_dir: str, *extra: str):
    return run_script("train.py", data, "--model-dir", model_dir, "--no-pretrained", "--print-freq", "0",
                      "--seed", "0", "--batch-size", "4", "--no-tensorboard", *extra)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_exports_and_classifies(arch, tiny_data, tmp_path):
    if ARCHITECTURES[arch].source == "timm" and not TIMM:
        pytest.skip("xception comes from timm, which is not installed")
    model_dir = str(tmp_path / arch)
    # VGG pools its features to 7 x 7; the ONNX exporter needs that to divide the map, as at 224 px.
    resolution = "224" if arch.startswith("vgg") else "96"
    # In-process (the CLIs' own main functions): a subprocess per step would triple the start-up cost.
    assert train_main(train_parser().parse_args([tiny_data, "--model-dir", model_dir, "--arch", arch, "--epochs", "1",
                                                 "--resolution", resolution, "--no-pretrained", "--print-freq", "0",
                                                 "--seed", "0", "--batch-size", "4", "--no-tensorboard"])) == 0
    export_onnx(ExportOptions(model_dir=model_dir))  # raises unless ONNX Runtime matches torch
    image = os.path.join(tiny_data, "val", "PNEUMONIA", "0.jpeg")
    results = tmp_path / "results.jsonl"
    assert classify_main(classify_parser().parse_args([image, "--model", model_dir, "--results", str(results)])) == 0
    assert '"status": "ok"' in results.read_text()


def _options(**chosen) -> TrainConfig:
    defaults = dict(freeze_backbone=False, unfreeze_at=None, train_last=None, epochs=5, arch="resnet18",
                    lr=0.01, backbone_lr_scale=0.1)
    return TrainConfig(data="", **{**defaults, **chosen})


def test_freezing_modes_leave_exactly_the_intended_parameters_trainable():
    model = build_model("resnet18", 2)
    total = sum(p.numel() for p in model.parameters())
    head = 512 * 2 + 2
    assert finetune.apply(model, _options(freeze_backbone=True), 0) == (head, total)
    unfreeze = _options(unfreeze_at=2)
    assert finetune.apply(model, unfreeze, 1)[0] == head
    assert finetune.apply(model, unfreeze, 2)[0] == total
    last_three = 512 * 512 * 9 + 2 * 512 + head  # layer4.1.conv2, layer4.1.bn2, fc
    assert finetune.apply(model, _options(train_last=3), 0)[0] == last_three
    groups = finetune.parameter_groups(model, unfreeze)
    assert [g["lr"] for g in groups] == [0.01, 0.01 * 0.1] and sum(len(g["params"]) for g in groups) == 62
    with_dropout = build_model("resnet50", 2, head_dropout=0.5)
    assert finetune.apply(with_dropout, _options(freeze_backbone=True, arch="resnet50"), 0)[0] == 2048 * 2 + 2


def test_compact_cnn_is_small():
    parameters = sum(p.numel() for p in CompactCNN(2).parameters())
    assert 2.2e6 < parameters < 2.6e6  # "about 2.5M", small enough for a Jetson Orin Nano


@pytest.mark.parametrize("arguments, message", [
    (("--arch", "alexnet"), "unknown architecture 'alexnet'; choose from resnet18, resnet34"),
    (("--train-last", "100000"), "--train-last 100000: resnet18 has 41 parameter blocks"),
    (("--unfreeze-at", "5", "--epochs", "3"), "--unfreeze-at 5 must fall inside the run"),
    (("--freeze-backbone", "--train-last", "2"), "cannot be combined"),
    (("--class-weights", "1,2,3"), "--class-weights 1,2,3"),
])
def test_bad_options_fail_before_any_training(arguments, message, tiny_data, tmp_path):
    result = _train(tiny_data, str(tmp_path / "m"), *arguments)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "=> Epoch" not in result.stdout
    assert not os.path.exists(tmp_path / "m" / "checkpoint.pth.tar")


def test_training_prints_trainable_counts_and_unfreezes(tiny_data, tmp_path):
    result = _train(tiny_data, str(tmp_path / "m"), "--epochs", "2", "--unfreeze-at", "1", "--resolution", "64",
                    "--optimizer", "adamw", "--lr", "0.001", "--scheduler", "onecycle", "--label-smoothing", "0.1")
    assert result.returncode == 0, result.stderr
    assert "=> epoch 0: trainable parameters: 1,026 of 11,177,538" in result.stdout
    assert "=> epoch 1: trainable parameters: 11,177,538 of 11,177,538" in result.stdout


def test_early_stopping_stops_and_keeps_the_best(tiny_data, tmp_path):
    # Nothing can improve: a frozen backbone (batch norm statistics included) and a zero learning rate.
    model_dir = tmp_path / "m"
    result = _train(tiny_data, str(model_dir), "--epochs", "6", "--early-stop", "2", "--freeze-backbone",
                    "--lr", "0", "--resolution", "64", "--select-metric", "loss")
    assert result.returncode == 0, result.stderr
    assert "=> early stop: no better loss for 2 epoch(s) since epoch 0" in result.stdout
    assert [e["epoch"] for e in load_checkpoint(str(model_dir / "checkpoint.pth.tar"))["history"]] == [0, 1, 2]
    assert load_checkpoint(str(model_dir / "model_best.pth.tar"))["epoch"] == 0


@pytest.mark.parametrize("scheduler", ["step", "plateau"])
def test_every_scheduler_runs(scheduler, tiny_data, tmp_path):
    result = _train(tiny_data, str(tmp_path / scheduler), "--epochs", "2", "--resolution", "64", "--scheduler",
                    scheduler, "--step-size", "1", "--optimizer", "adam", "--lr", "0.001")
    assert result.returncode == 0, result.stderr
    history = load_checkpoint(str(tmp_path / scheduler / "checkpoint.pth.tar"))["history"]
    if scheduler == "step":
        assert history[1]["lr"] == pytest.approx(history[0]["lr"] * 0.1)


def test_resume_across_an_unfreeze_matches_an_uninterrupted_run(tiny_data, tmp_path):
    arguments = lambda folder: [tiny_data, "--model-dir", folder, "--no-pretrained", "--seed", "0",  # noqa: E731
                                "--batch-size", "2", "--resolution", "64", "--epochs", "3", "--unfreeze-at", "2",
                                "--print-freq", "1", "--no-tensorboard"]
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    assert run_script("train.py", *arguments(reference)).returncode == 0
    kill_during_epoch(arguments(killed), epoch=2)  # the first unfrozen epoch
    assert load_checkpoint(os.path.join(killed, "checkpoint.pth.tar"))["epoch"] == 1
    resumed = run_script("train.py", *arguments(killed), "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "=> epoch 2: trainable parameters: 11,177,538" in resumed.stdout
    final = load_checkpoint(os.path.join(killed, "checkpoint.pth.tar"))["state_dict"]
    expected = load_checkpoint(os.path.join(reference, "checkpoint.pth.tar"))["state_dict"]
    for name, tensor in expected.items():
        assert torch.allclose(final[name].float(), tensor.float(), atol=1e-5), name


def test_comparison_report(tiny_data, trained_model_dir, tmp_path):
    compact = str(tmp_path / "compact")
    out = tmp_path / "report"
    result = run_script("-m", "bench.compare_models", tiny_data, compact, "--output", str(out), "--runs", "5",
                        "--recipe", f"{compact}=--arch compact_cnn --epochs 1 --no-pretrained --batch-size 4 "
                                    "--print-freq 0 --resolution 64 --no-tensorboard")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    report = (out / "report.md").read_text()
    assert "| compact | compact_cnn | 64 |" in report and "CPU ms/image" in report
    for picture in ("roc_overlay.png", "confusion_compact.png"):
        assert os.path.getsize(out / picture) > 1000


def test_model_card(trained_model_dir):
    card = open(os.path.join(trained_model_dir, "MODEL_CARD.md")).read()
    assert "**Not a diagnostic device.**" in card and "`resnet18`" in card
    assert "Split manifest sha256: `" in card and "no manifest" not in card
    assert "Trained on SYNTHETIC images" in card  # the test data set is generated
    checkpoint = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    assert f"at least {checkpoint['threshold']:.4f}" in card
