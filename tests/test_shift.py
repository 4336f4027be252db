"""Shift proxies (train/shift.py), equalisation in the shared preprocessing, and the recipe benchmark."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch

from bench.train_recipes import SERIES_PROXY, holdout_layout
from bench.train_recipes import get_args_parser as recipes_parser
from bench.train_recipes import main as recipes_main
from cxr_jetson.core.preprocess import PreprocessSpec, load_for_network, resize_to_network
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.train.augment import AUGMENTATIONS, augment_batch, equalize_hist
from cxr_jetson.train.dataset import find_classes, list_images, load_split
from cxr_jetson.train.shift import PROXIES, degrade, load_with_proxies
from tests.conftest import RESOLUTION


@pytest.fixture(scope="module")
def network_images() -> np.ndarray:
    rng = np.random.default_rng(0)
    spec = PreprocessSpec(resolution=96)
    return np.stack([resize_to_network(synthetic_xray(rng, i % 2 == 1, 300, 360), spec) for i in range(6)])


@pytest.mark.parametrize("equalize", ["hist", "clahe"])
def test_equalisation_is_part_of_the_spec(equalize):
    spec = PreprocessSpec(resolution=96, equalize=equalize)
    assert PreprocessSpec.from_dict(json.loads(spec.to_json())) == spec


def test_histogram_equalisation_undoes_a_global_exposure_change(network_images):
    # (CLAHE, a local contrast enhancer, leaves a darker image nearly as dark: 37 vs 40 levels here)
    spec = PreprocessSpec(resolution=96, equalize="hist")
    image = network_images[0]
    darker = np.clip(np.rint(255.0 * (image / 255.0) ** 1.8), 0, 255).astype(np.uint8)
    plain = np.abs(image.astype(int) - darker).mean()
    equalised = np.abs(resize_to_network(image, spec).astype(int) - resize_to_network(darker, spec)).mean()
    assert equalised < plain / 3, (equalised, plain)


def test_a_spec_without_equalisation_is_written_as_older_toolkits_read_it():
    assert "equalize" not in PreprocessSpec().to_dict()
    assert PreprocessSpec.from_dict(PreprocessSpec().to_dict()).equalize == "none"
    with pytest.raises(ValueError, match="equalization"):
        PreprocessSpec(equalize="adaptive")


def test_equalised_preprocessing_is_opencvs_own(tmp_path, network_images):
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, network_images[1])
    spec = PreprocessSpec(resolution=96, equalize="hist")
    np.testing.assert_array_equal(load_for_network(path, spec), cv2.equalizeHist(network_images[1]))


@pytest.mark.parametrize("proxy", PROXIES)
def test_each_proxy_changes_every_image_reproducibly(network_images, proxy):
    first, second = degrade(network_images, proxy, seed=4), degrade(network_images, proxy, seed=4)
    assert first.dtype == np.uint8 and first.shape == network_images.shape
    np.testing.assert_array_equal(first, second)
    changed = np.abs(first.astype(int) - network_images).mean(axis=(1, 2))
    assert (changed > 1.0).all(), changed


def test_mixed_proxy_draws_from_every_degradation(network_images):
    many = np.repeat(network_images[:1], 40, axis=0)
    mixed = degrade(many, "mixed", seed=0)
    # noise and resolution keep the mean grey level; contrast and gamma move it: both kinds appear
    means = mixed.reshape(40, -1).mean(1) - many[0].mean()
    assert (np.abs(means) < 1.5).any() and (np.abs(means) > 3).any()
    with pytest.raises(ValueError, match="unknown shift proxy"):
        degrade(many, "fog")


def test_load_with_proxies_equalises_after_degrading(prepared_data):
    classes = find_classes(os.path.join(prepared_data, "train"))
    spec = PreprocessSpec(resolution=RESOLUTION, equalize="clahe")
    splits = load_with_proxies(prepared_data, "val", classes, spec, 2)
    assert list(splits) == ["val"] + [f"val~{proxy}" for proxy in PROXIES]
    clean = load_split(prepared_data, "val", classes, spec, 2)
    assert torch.equal(splits["val"].images, clean.images) and splits["val"].paths == clean.paths
    for name, split in splits.items():
        assert torch.equal(split.labels, clean.labels), name
    assert not torch.equal(splits["val~noise"].images, clean.images)


def test_strong_augmentation_is_reproducible_and_adds_blur_and_noise():
    images = torch.full((8, 48, 48), 128, dtype=torch.uint8)
    spec = PreprocessSpec(resolution=48)
    strong = AUGMENTATIONS["strong"]
    first = augment_batch(images, spec, strong, torch.Generator().manual_seed(1))
    second = augment_batch(images, spec, strong, torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    centre = first[:, 0, 12:36, 12:36]
    assert (centre.std(dim=(1, 2)) > 0).all()  # a flat grey image gets noise everywhere


def test_holdout_layout_moves_one_normal_series_out_of_training(prepared_data, tmp_path):
    counts = holdout_layout(prepared_data, str(tmp_path / "held"), "IM", "NORMAL", "PNEUMONIA")
    classes = ["NORMAL", "PNEUMONIA"]
    train = [os.path.basename(p) for p, label in list_images(str(tmp_path / "held" / "train"), classes) if label == 0]
    series = list_images(str(tmp_path / "held" / SERIES_PROXY), classes)
    assert train and all(name.startswith("NORMAL2-") for name in train)
    assert all(os.path.basename(p).startswith("IM-") for p, label in series if label == 0)
    assert {label for _, label in series} == {0, 1}
    assert counts[SERIES_PROXY] == len(series)
    with pytest.raises(Exception, match="series prefix"):
        holdout_layout(prepared_data, str(tmp_path / "none"), "CT", "NORMAL", "PNEUMONIA")


def test_recipe_benchmark_scores_both_recipes_on_every_proxy(prepared_data, tmp_path):
    output = str(tmp_path / "recipes.json")
    args = recipes_parser().parse_args(["--data", prepared_data, "--epochs", "1", "--resolution", "64",
                                        "--device", "cpu", "--workers", "0", "--output", output,
                                        "--ours-args", "--batch-size 8 --workers 2"])
    assert recipes_main(args) == 0
    results = json.load(open(output))["results"]
    assert set(results) == {"ours", "jetson"}
    expected = {"val", SERIES_PROXY} | {f"val~{proxy}" for proxy in PROXIES}
    for recipe in results.values():
        assert set(recipe["metrics"]) == expected
        assert recipe["seconds"] > 0 and recipe["images_per_second"] > 0
        for metrics in recipe["metrics"].values():
            assert 0.0 <= metrics["accuracy"] <= 1.0
    assert results["jetson"]["threshold"] == 0.5
    assert os.path.isfile(os.path.splitext(output)[0] + ".png")


def test_batched_equalisation_on_torch_is_opencvs(network_images):
    flat = np.full_like(network_images[0], 77)
    batch = np.concatenate([network_images, flat[None]])
    grey = torch.from_numpy(batch).float().div(255.0).unsqueeze(1)
    equalised = equalize_hist(grey).squeeze(1).mul(255.0).round().to(torch.uint8).numpy()
    for mine, image in zip(equalised, batch):
        np.testing.assert_array_equal(mine, cv2.equalizeHist(image))


def _distance_from_uniform(inputs: torch.Tensor, spec: PreprocessSpec) -> np.ndarray:
    """Per image: the largest gap between its grey-level CDF and a uniform one (0 for a flat histogram)."""
    grey = (inputs[:, 0] * spec.std[0] + spec.mean[0]).clamp(0, 1).numpy().reshape(len(inputs), -1)
    levels = np.linspace(0, 1, 256)
    cdf = np.stack([np.searchsorted(np.sort(image), levels, side="right") / image.size for image in grey])
    return np.abs(cdf - levels).max(1)


def test_augmented_batches_of_a_hist_model_are_equalised_like_the_devices_input(network_images):
    # the augmentations play another machine; the device equalises whatever it gets, so training does too
    # (not exactly flat: the black border of a shrunk or shifted image is one grey level no equalisation spreads)
    for equalize, expected in (("hist", lambda d: d < 0.1), ("none", lambda d: d > 0.2)):
        spec = PreprocessSpec(resolution=96, equalize=equalize)
        images = torch.from_numpy(np.stack([resize_to_network(image, spec) for image in network_images]))
        inputs = augment_batch(images, spec, AUGMENTATIONS["strong"], torch.Generator().manual_seed(2))
        distances = _distance_from_uniform(inputs, spec)
        assert expected(distances).all(), (equalize, distances)
