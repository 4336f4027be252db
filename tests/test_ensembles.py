"""bench/ensembles.py: the exported form of a variant (MeanProbabilities, Mirrored) gives exactly the
probabilities the benchmark scores, members that cannot share an input are refused, and the command
scores single models, mirror views and an ensemble end to end."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from bench.ensembles import (
    ENSEMBLE,
    MIRROR,
    MeanProbabilities,
    Mirrored,
    combined_predictions,
    get_args_parser,
    main,
    variant_network,
    variant_parts,
)
from bench.threshold_policies import SERIES_PROXY, VALIDATION
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.core.preprocess import PreprocessSpec
from cxr_jetson.train.dataset import CachedSplit
from cxr_jetson.train.loop import predict_probabilities
from cxr_jetson.train.metrics import DEFAULT_POLICY


def _small_classifier(seed: int) -> nn.Module:
    """A small untrained convolutional classifier whose outputs depend on where things are in the image."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()


def _split(count: int = 6, resolution: int = 32) -> CachedSplit:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (count, resolution, resolution), np.uint8))
    labels = torch.tensor([0, 1] * (count // 2))
    return CachedSplit("val", images, labels, [f"/v/person{i}_virus_{i}.jpeg" for i in range(count)], [])


def test_mean_probabilities_softmax_is_the_mean_of_the_members():
    members = [_small_classifier(seed) for seed in range(3)]
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        for member in members:
            member(images)  # sizes the lazy layer
        expected = torch.stack([torch.softmax(member(images), 1) for member in members]).mean(0)
        combined = torch.softmax(MeanProbabilities(members)(images), 1)
    torch.testing.assert_close(combined, expected, rtol=1e-5, atol=1e-6)


def test_the_mirror_view_sees_the_flipped_image_and_a_symmetric_image_alike():
    model = _small_classifier(0)
    images = torch.randn(2, 3, 32, 32)
    symmetric = images + torch.flip(images, dims=[-1])
    with torch.no_grad():
        model(images)
        torch.testing.assert_close(Mirrored(model)(images), model(torch.flip(images, dims=[-1])))
        torch.testing.assert_close(Mirrored(model)(symmetric), model(symmetric), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(Mirrored(model)(images), model(images))


def test_variants_name_their_views():
    assert variant_parts(["a"]) == {"a": ["a"], "a" + MIRROR: ["a", "a~mirrored"]}
    parts = variant_parts(["a", "b", "c"])
    assert parts[f"{ENSEMBLE} of 3"] == ["a", "b", "c"]
    assert parts[f"{ENSEMBLE} of 3{MIRROR}"] == ["a", "a~mirrored", "b", "b~mirrored", "c", "c~mirrored"]


def test_the_scored_probabilities_are_those_of_the_exported_network():
    """The benchmark averages each view's predictions instead of running every variant's network; both
    must give the same probabilities, so what is scored is what would deploy."""
    spec = PreprocessSpec(resolution=32)
    split = _split()
    members = {"a": _small_classifier(1), "b": _small_classifier(2)}
    for member in members.values():
        member(torch.zeros(1, 3, 32, 32))
    device = torch.device("cpu")
    with torch.no_grad():
        views = {view: {VALIDATION: (predict_probabilities(
            variant_network([view], members), split, spec, device, 4, False), split)}
            for view in ("a", "a~mirrored", "b", "b~mirrored")}
        for name, variant in variant_parts(list(members)).items():
            direct = predict_probabilities(variant_network(variant, members), split, spec, device, 4, False)
            np.testing.assert_allclose(combined_predictions(views, variant)[VALIDATION][0], direct,
                                       rtol=1e-5, atol=1e-6, err_msg=name)


def _twin(model_dir: str, folder) -> str:
    twin = str(folder / "twin")
    shutil.copytree(model_dir, twin)
    return twin


def test_the_command_scores_single_models_mirror_views_and_their_ensemble(trained_model_dir, prepared_data,
                                                                           tmp_path):
    output = str(tmp_path / "ensembles.json")
    twin = _twin(trained_model_dir, tmp_path)
    args = get_args_parser().parse_args([trained_model_dir, twin, "--data", prepared_data, "--folds", "2",
                                         "--device", "cpu", "--repeats", "2", "--output", output])
    assert main(args) == 0
    results = json.load(open(output))["results"]
    name = os.path.basename(trained_model_dir)
    assert set(results) == {name, name + MIRROR, "twin", "twin" + MIRROR, f"{ENSEMBLE} of 2",
                            f"{ENSEMBLE} of 2{MIRROR}"}
    for result in results.values():
        assert {VALIDATION, SERIES_PROXY} <= set(result["auc"]) and {VALIDATION, SERIES_PROXY} <= set(result["splits"])
        assert result["ms_per_image"] > 0
    # two copies of one model: their ensemble decides as the model does
    for split in (VALIDATION, SERIES_PROXY):
        assert results[f"{ENSEMBLE} of 2"]["auc"][split]["auc"] == pytest.approx(results[name]["auc"][split]["auc"])
        assert results[f"{ENSEMBLE} of 2"]["splits"][split] == pytest.approx(results[name]["splits"][split])
    assert results[f"{ENSEMBLE} of 2{MIRROR}"]["views"] == 4
    assert os.path.isfile(str(tmp_path / "ensembles.png"))
    pairs = json.load(open(output))["pairs"]
    assert set(pairs) == {f"{name} -> {name}{MIRROR}", f"twin -> twin{MIRROR}", "mirror view: mean of 2 pairs",
                          f"{name} -> {ENSEMBLE} of 2", f"twin -> {ENSEMBLE} of 2", "ensemble: mean of 2 pairs",
                          f"{ENSEMBLE} of 2 -> {ENSEMBLE} of 2{MIRROR}"}
    for split in (VALIDATION, SERIES_PROXY):
        # the ensemble of two copies decides as each of them: nothing gained, nothing lost, on any resample
        same = pairs["ensemble: mean of 2 pairs"][split]
        assert same["auc"]["difference"] == 0.0  # (this small set has too few images of a class for its interval)
        assert same[DEFAULT_POLICY]["specificity"] == {"difference": 0.0, "low": 0.0, "high": 0.0}
        # the mirror view's paired difference is the difference of the two variants' own figures
        mirror = pairs[f"{name} -> {name}{MIRROR}"][split]
        assert mirror["auc"]["difference"] == pytest.approx(
            results[name + MIRROR]["auc"][split]["auc"] - results[name]["auc"][split]["auc"])
        for measure in ("sensitivity", "specificity"):
            assert mirror[DEFAULT_POLICY][measure]["difference"] == pytest.approx(
                results[name + MIRROR]["splits"][split][measure] - results[name]["splits"][split][measure])
            assert mirror[DEFAULT_POLICY][measure]["low"] <= mirror[DEFAULT_POLICY][measure]["difference"] \
                <= mirror[DEFAULT_POLICY][measure]["high"]
    assert os.path.isfile(str(tmp_path / "ensembles_pairs.png"))


def test_members_of_different_preprocessing_are_refused(trained_model_dir, prepared_data, tmp_path):
    twin = _twin(trained_model_dir, tmp_path)
    path = os.path.join(twin, BEST_CHECKPOINT)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["preprocess"] = {**checkpoint["preprocess"], "resolution": 2 * checkpoint["preprocess"]["resolution"]}
    torch.save(checkpoint, path)
    with pytest.raises(ToolkitError, match="differ in preprocessing"):
        main(get_args_parser().parse_args([trained_model_dir, twin, "--data", prepared_data, "--folds", "2"]))


def test_members_given_twice_or_missing_are_refused(trained_model_dir, prepared_data, tmp_path):
    with pytest.raises(ToolkitError, match="given twice"):
        main(get_args_parser().parse_args([trained_model_dir, trained_model_dir + os.sep, "--data", prepared_data]))
    with pytest.raises(ToolkitError, match="no model_best"):
        main(get_args_parser().parse_args([str(tmp_path), "--data", prepared_data]))
