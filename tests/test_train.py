"""train.py: outputs, checkpoint contract, safe loading, evaluation, weights and metric policies."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision

from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.networks.checkpoint import CheckpointError, load_checkpoint
from cxr_jetson.train.augment import AugmentConfig, augment_batch
from cxr_jetson.train.metrics import PolicyError, binary_metrics, choose_threshold
from tests.conftest import RESOLUTION, run_script, train_args

JETSON_KEYS = {"epoch", "arch", "resolution", "classes", "num_classes", "multi_label", "state_dict",
               "accuracy", "loss", "optimizer"}
OUR_KEYS = {"scheduler", "rng", "best", "threshold", "threshold_policy", "positive_class", "preprocess",
            "val_metrics", "history", "args"}


def test_training_writes_checkpoints_labels_and_pictures(trained_model_dir):
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "labels.txt", "args.json", "training_curves.png",
                 "history.csv",
                 "eval_val/metrics.json", "eval_val/roc.png", "eval_val/confusion_matrix.png"):
        assert os.path.isfile(os.path.join(trained_model_dir, name)), name
    checkpoint = load_checkpoint(os.path.join(trained_model_dir, "checkpoint.pth.tar"))
    assert JETSON_KEYS | OUR_KEYS <= set(checkpoint)
    assert checkpoint["classes"] == ["NORMAL", "PNEUMONIA"] and checkpoint["positive_class"] == "PNEUMONIA"
    assert checkpoint["resolution"] == RESOLUTION and checkpoint["preprocess"]["resolution"] == RESOLUTION
    assert 0.0 < checkpoint["threshold"] < 1.0
    assert [entry["epoch"] for entry in checkpoint["history"]] == [0, 1]
    for entry in checkpoint["history"]:
        for key in ("train_loss", "val_loss", "val_auc", "val_accuracy", "val_sensitivity", "val_specificity"):
            assert np.isfinite(entry[key]), key
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    assert best["epoch"] == checkpoint["best"]["epoch"]
    metrics = json.load(open(os.path.join(trained_model_dir, "eval_val", "metrics.json")))
    assert metrics["metrics"]["threshold"] == pytest.approx(best["threshold"])


def test_evaluate_scores_another_split_at_the_validation_threshold(trained_model_dir, prepared_data):
    result = run_script("train.py", prepared_data, "--model-dir", trained_model_dir, "--evaluate", "--split", "test")
    assert result.returncode == 0, result.stderr
    out = os.path.join(trained_model_dir, "eval_test")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    assert metrics["metrics"]["threshold"] == pytest.approx(best["threshold"])  # not re-tuned on test
    assert metrics["metrics"]["n"] == 8 and len(metrics["confusion_matrix"]) == 2
    for picture in ("roc.png", "confusion_matrix.png", "training_curves.png"):
        assert os.path.getsize(os.path.join(out, picture)) > 1000


class _RunsCode:
    """Unpickling this would run ``touch`` on the marker: exactly what weights_only=True prevents."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path, prepared_data):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"arch": "resnet18", "num_classes": 2, "state_dict": {}, "payload": _RunsCode(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(str(evil))
    result = run_script("train.py", prepared_data, "--model-dir", str(tmp_path / "m"), "--evaluate",
                        "--resume", str(evil))
    assert result.returncode == 2 and "refusing to load" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


def test_truncated_and_bare_checkpoints_get_clear_errors(tmp_path, trained_model_dir):
    source = open(os.path.join(trained_model_dir, "model_best.pth.tar"), "rb").read()
    truncated = tmp_path / "cut.pth.tar"
    truncated.write_bytes(source[: len(source) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(truncated))
    bare = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), bare)
    with pytest.raises(CheckpointError, match="--weights"):
        load_checkpoint(str(bare))


def test_pretrained_without_network_says_what_to_do(tmp_path, prepared_data):
    offline = {"TORCH_HOME": str(tmp_path / "torch"), "HTTPS_PROXY": "http://127.0.0.1:9",
               "https_proxy": "http://127.0.0.1:9"}
    args = [a for a in train_args(prepared_data, str(tmp_path / "m"), "--epochs", "1") if a != "--no-pretrained"]
    result = run_script("train.py", *args, env=offline)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "cannot download ImageNet weights" in message and "--weights" in message and "--no-pretrained" in message


def _assert_trained_from(start_weights: dict, model_dir) -> None:
    trained = load_checkpoint(str(model_dir / "model_best.pth.tar"))["state_dict"]
    start, end = start_weights["layer4.1.conv2.weight"], trained["layer4.1.conv2.weight"]
    assert not torch.equal(start, end)  # trained from there...
    moved = (end - start).norm() / start.norm()
    assert moved < 0.2, moved  # ...not from a new random start (an independent init differs by about 1.4)


def test_local_weights_file_with_dataparallel_prefix_starts_training(tmp_path, prepared_data):
    imagenet_like = torchvision.models.resnet18().state_dict()
    weights = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in imagenet_like.items()}, weights)
    model_dir = tmp_path / "from_weights"
    result = run_script("train.py", *train_args(prepared_data, str(model_dir), "--epochs", "1", "--weights",
                                                str(weights)))
    assert result.returncode == 0, result.stderr
    _assert_trained_from(imagenet_like, model_dir)


def test_default_recipe_with_pretrained_uses_the_imagenet_weights_torchvision_finds(tmp_path, prepared_data):
    # torchvision looks for its download in TORCH_HOME/hub/checkpoints first; a file put there is what
    # an online user's first run leaves, so --pretrained runs the full default recipe offline.
    imagenet_like = torchvision.models.resnet18().state_dict()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(imagenet_like, cache / os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url))
    offline = {"TORCH_HOME": str(tmp_path / "torch"), "HTTPS_PROXY": "http://127.0.0.1:9",
               "https_proxy": "http://127.0.0.1:9"}
    model_dir = tmp_path / "pretrained"
    args = [a for a in train_args(prepared_data, str(model_dir), "--epochs", "1") if a != "--no-pretrained"]
    result = run_script("train.py", *args, "--pretrained", env=offline)
    assert result.returncode == 0, result.stderr
    _assert_trained_from(imagenet_like, model_dir)
    recipe = load_checkpoint(str(model_dir / "model_best.pth.tar"))
    assert recipe["args"]["pretrained"] and recipe["args"]["augment"] == "strong"
    assert recipe["preprocess"]["equalize"] == "hist"


def test_threshold_policies():
    scores = np.array([0.05, 0.2, 0.3, 0.45, 0.5, 0.7, 0.8, 0.9, 0.95])
    targets = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1])
    youden = choose_threshold(scores, targets, "youden")
    assert 0.5 < youden < 0.7  # inside the gap that separates the best operating point, not on a score
    assert binary_metrics(scores, targets, youden)["specificity"] == 1.0
    sensitive = choose_threshold(scores, targets, "sensitivity:1.0")
    assert binary_metrics(scores, targets, sensitive)["sensitivity"] == 1.0
    assert choose_threshold(scores, targets, "fixed:0.5") == 0.5
    with pytest.raises(PolicyError):
        choose_threshold(scores, targets, "sensitivity:high")


def test_binary_metrics_match_a_hand_count():
    scores = np.array([0.1, 0.6, 0.4, 0.9, 0.8, 0.2])
    targets = np.array([0, 0, 1, 1, 1, 0])
    metrics = binary_metrics(scores, targets, 0.5)
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (2, 1, 2, 1)
    assert metrics["sensitivity"] == pytest.approx(2 / 3) and metrics["specificity"] == pytest.approx(2 / 3)
    assert metrics["auc"] == pytest.approx(8 / 9)


def test_augmentation_is_reproducible_from_its_generator():
    images = torch.randint(0, 256, (4, 48, 48), dtype=torch.uint8)
    spec = PreprocessSpec(resolution=48)
    first = augment_batch(images, spec, AugmentConfig(), torch.Generator().manual_seed(3))
    second = augment_batch(images, spec, AugmentConfig(), torch.Generator().manual_seed(3))
    assert first.shape == (4, 3, 48, 48) and torch.equal(first, second)
    still = AugmentConfig(scale=(1, 1), aspect=(1, 1), rotation_degrees=0, translate=0, hflip=0,
                          brightness=0, contrast=(1, 1), gamma=(1, 1))
    unchanged = augment_batch(images, spec, still, torch.Generator().manual_seed(3))
    np.testing.assert_allclose(unchanged.numpy(), normalize(images.numpy(), spec), atol=1e-4)


def test_bad_data_folder_is_a_one_line_error(tmp_path):
    result = run_script("train.py", str(tmp_path / "missing"), "--model-dir", str(tmp_path / "m"), "--no-pretrained")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_epochs_validate_under_autocast_and_the_shipped_threshold_is_fp32s(tmp_path, prepared_data):
    """bf16 validation picks model_best; its threshold and metrics are then taken again in fp32."""
    from cxr_jetson.networks.checkpoint import preprocess_spec
    from cxr_jetson.networks.model import model_from_checkpoint
    from cxr_jetson.train.dataset import find_classes
    from cxr_jetson.train.loop import predict_probabilities
    from cxr_jetson.train.shift import TRAINING_PROXY, load_with_proxies
    model_dir = str(tmp_path / "bf16")
    result = run_script("train.py", *train_args(prepared_data, model_dir, "--epochs", "1", "--amp", "bf16",
                                                "--no-calibrate", "--no-input-gate"))
    assert result.returncode == 0, result.stderr
    best = load_checkpoint(os.path.join(model_dir, "model_best.pth.tar"))
    assert best["history"][0]["threshold"] is not None  # the epoch's own, from its bf16 validation
    spec, classes = preprocess_spec(best), find_classes(os.path.join(prepared_data, "train"))
    splits = list(load_with_proxies(prepared_data, "val", classes, spec, 0, (TRAINING_PROXY,)).values())
    model = model_from_checkpoint(best)
    probabilities = np.concatenate([predict_probabilities(model, split, spec, "cpu", 8, False) for split in splits])
    targets = np.concatenate([split.labels.numpy() for split in splits])
    fp32_threshold = choose_threshold(probabilities[:, 1], targets, best["threshold_policy"])
    # relative: a one-epoch model's threshold can be a probability of 3e-4, where bf16 moves it by ~2e-7 only
    assert best["threshold"] == pytest.approx(fp32_threshold, rel=1e-4)  # memory layout only; bf16 moves ~1e-3
    assert best["history"][0]["threshold"] != pytest.approx(fp32_threshold, rel=1e-4)
    evaluated = json.load(open(os.path.join(model_dir, "eval_val", "metrics.json")))["metrics"]
    for key in ("tp", "fp", "tn", "fn"):
        assert evaluated[key] == best["val_metrics"][key], key


def test_model_best_has_the_batch_norm_statistics_of_the_unaugmented_training_images(recalibrated_model_dir,
                                                                                    trained_model_dir, prepared_data):
    """--recalibrate-bn: model_best's running statistics are those of the training images as the device sees them;
    measuring them again gives the same. Without it (the default) model_best keeps its training statistics."""
    assert "batch_norm" not in load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    trained_model_dir = recalibrated_model_dir
    from cxr_jetson.networks.checkpoint import preprocess_spec
    from cxr_jetson.networks.model import model_from_checkpoint
    from cxr_jetson.train.dataset import find_classes, load_split
    from cxr_jetson.train.site_shift import batch_norm_layers, reestimate_batch_norm
    best = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    spec = preprocess_spec(best)
    train = load_split(prepared_data, "train", find_classes(os.path.join(prepared_data, "train")), spec, 0)
    assert best["batch_norm"] == {"recalibrated_on": "train", "images": len(train), "layers": 20}
    shipped = model_from_checkpoint(best)
    measured = model_from_checkpoint(best)
    reestimate_batch_norm(measured, train.images.numpy(), spec, torch.device("cpu"), batch_size=8)
    for ours, again in zip(batch_norm_layers(shipped), batch_norm_layers(measured)):
        assert torch.allclose(ours.running_mean, again.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, again.running_var, rtol=1e-4, atol=1e-6)
    last = load_checkpoint(os.path.join(trained_model_dir, "checkpoint.pth.tar"))
    assert not torch.equal(last["state_dict"]["bn1.running_mean"], best["state_dict"]["bn1.running_mean"])


def test_reported_figures_carry_95_percent_intervals(trained_model_dir):
    metrics = json.load(open(os.path.join(trained_model_dir, "eval_val", "metrics.json")))["metrics"]
    for key in ("accuracy", "sensitivity", "specificity"):
        assert metrics[f"{key}_low"] <= metrics[key] <= metrics[f"{key}_high"], key
    entry = load_checkpoint(os.path.join(trained_model_dir, "checkpoint.pth.tar"))["history"][-1]
    assert entry["val_sensitivity_low"] <= entry["val_sensitivity"] <= entry["val_sensitivity_high"]
    card = open(os.path.join(trained_model_dir, "MODEL_CARD.md")).read()
    assert "| metric | value [95% CI] |" in card and f"[{metrics['specificity_low']:.4f}, " in card
