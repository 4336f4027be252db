"""bench/threshold_policies.py: cross-fitted decisions keep patients whole, never decide an image at a
threshold chosen on it, measure a sensitivity target without the in-sample optimism, and the command
scores a trained model end to end."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from bench.threshold_policies import (
    POOLED,
    SERIES_PROXY,
    VALIDATION,
    get_args_parser,
    main,
    model_names,
    score_policies,
    split_folds,
    validation_folds,
)
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.train.dataset import CachedSplit
from cxr_jetson.train.metrics import choose_threshold


def _paths(patients: np.ndarray, labels: np.ndarray, prefix: str = "") -> list:
    """Official-style file names: patient ``person<N>`` for pneumonia, ``IM-<N>`` for normals."""
    return [f"/v{prefix}/{'person%d_bacteria_%d.jpeg' % (p, i) if y else 'IM-%04d-%04d.jpeg' % (p, i)}"
            for i, (p, y) in enumerate(zip(patients, labels))]


def _split(name: str, paths: list, labels: np.ndarray) -> CachedSplit:
    return CachedSplit(name, torch.zeros((len(paths), 1, 1), dtype=torch.uint8), torch.from_numpy(labels), paths, [])


def _predictions(scores: dict, labels: dict, paths: dict) -> dict:
    return {name: (np.stack([1 - scores[name], scores[name]], 1), _split(name, paths[name], labels[name]))
            for name in scores}


def _simulated_site(rng: np.random.Generator, normals: int = 120, pneumonia: int = 360):
    """Validation with two images per patient, its mixed copy (noisier scores of the same images), and a
    series of unseen normals: positive-class probabilities from overlapping logit distributions."""
    labels = np.r_[np.zeros(normals, int), np.ones(pneumonia, int)]
    patients = np.r_[np.arange(normals) // 2, np.arange(pneumonia) // 2 + 10_000]
    logits = np.where(labels == 1, rng.normal(2.0, 1.2, labels.size), rng.normal(-2.0, 1.2, labels.size))
    series_labels = np.r_[np.zeros(200, int), labels[labels == 1]]
    series_paths = _paths(np.arange(200) + 50_000, np.zeros(200, int), "s") + \
        [p for p, y in zip(_paths(patients, labels), labels) if y]
    series_logits = np.r_[rng.normal(-1.6, 1.3, 200), logits[labels == 1]]
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    scores = {VALIDATION: sigmoid(logits), POOLED[1]: sigmoid(logits + rng.normal(0, 0.6, labels.size)),
              SERIES_PROXY: sigmoid(series_logits)}
    val_paths = _paths(patients, labels)
    return _predictions(scores, {VALIDATION: labels, POOLED[1]: labels, SERIES_PROXY: series_labels},
                        {VALIDATION: val_paths, POOLED[1]: val_paths, SERIES_PROXY: series_paths})


def test_folds_keep_patients_whole_and_hold_both_classes():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(40, int), np.ones(120, int)]
    patients = np.r_[np.arange(40) // 2, np.arange(120) // 3 + 1000]
    paths = _paths(patients, labels)
    fold_of = validation_folds(paths, labels, 4, seed=0)
    assert sorted(set(fold_of.values())) == [0, 1, 2, 3]
    for patient in np.unique(patients):
        assert len({fold_of[p] for p, q in zip(paths, patients) if q == patient}) == 1
    for fold in range(4):
        held = [labels[i] for i, p in enumerate(paths) if fold_of[p] == fold]
        assert set(held) == {0, 1}
    # images validation does not hold get a fold per patient; validation's keep theirs
    unseen = _paths(rng.integers(0, 30, 60) + 5000, np.zeros(60, int), "s")
    folds = split_folds(paths + unseen, fold_of, 4, seed=0)
    assert list(folds[:len(paths)]) == [fold_of[p] for p in paths]
    by_patient = {}
    for path, fold in zip(unseen, folds[len(paths):]):
        by_patient.setdefault(os.path.basename(path).split("-")[1], set()).add(fold)
    assert all(len(assigned) == 1 for assigned in by_patient.values())


def test_too_few_patients_for_the_folds_is_a_clear_error():
    labels = np.array([0, 0, 1, 1, 1, 1])
    paths = _paths(np.array([1, 1, 2, 3, 4, 5]), labels)
    with pytest.raises(ToolkitError, match="1 patient.*--folds 2"):
        validation_folds(paths, labels, 2, seed=0)


def test_no_image_is_decided_at_a_threshold_chosen_on_it():
    predictions = _simulated_site(np.random.default_rng(2))
    result = score_policies(predictions, 1, ["youden"], folds=5, seed=0)["youden"]
    scores = {name: p[:, 1] for name, (p, _) in predictions.items()}
    targets = {name: split.labels.numpy() for name, (_, split) in predictions.items()}
    paths = {name: list(split.paths) for name, (_, split) in predictions.items()}
    fold_of = validation_folds(paths[VALIDATION], targets[VALIDATION], 5, seed=0)
    for fold, threshold in enumerate(result["fold_thresholds"]):
        # chosen on every other fold's images of validation and its mixed copy, and on nothing else
        others = [np.array([fold_of[p] != fold for p in paths[name]]) for name in POOLED]
        expected = choose_threshold(np.concatenate([scores[n][k] for n, k in zip(POOLED, others)]),
                                    np.concatenate([targets[n][k] for n, k in zip(POOLED, others)]), "youden")
        assert threshold == pytest.approx(expected)
    assert result["threshold"] == pytest.approx(choose_threshold(
        np.concatenate([scores[n] for n in POOLED]), np.concatenate([targets[n] for n in POOLED]), "youden"))


def test_a_sensitivity_target_is_not_met_by_construction_out_of_sample():
    # In sample the target is met by definition; cross-fitted, sensitivity scatters around it, and over
    # many simulated sites its mean is close to the target while specificity follows the threshold.
    in_sample, crossed = [], []
    for seed in range(12):
        predictions = _simulated_site(np.random.default_rng(100 + seed))
        result = score_policies(predictions, 1, ["sensitivity:0.9"], folds=5, seed=seed)["sensitivity:0.9"]
        scores, split = predictions[VALIDATION][0][:, 1], predictions[VALIDATION][1]
        in_sample.append(np.mean(scores[split.labels.numpy() == 1] >= result["threshold"]))
        crossed.append(result["splits"][VALIDATION]["sensitivity"])
        for rates in result["splits"].values():
            assert rates["sensitivity_low"] <= rates["sensitivity"] <= rates["sensitivity_high"]
            assert rates["specificity_low"] <= rates["specificity"] <= rates["specificity_high"]
    assert min(in_sample) >= 0.88  # pooled with the noisier copy, validation alone sits near the target
    assert np.std(crossed) > 0 and abs(np.mean(crossed) - 0.9) < 0.03


def test_stricter_sensitivity_targets_trade_specificity_on_the_unseen_series():
    predictions = _simulated_site(np.random.default_rng(7))
    results = score_policies(predictions, 1, ["sensitivity:0.99", "sensitivity:0.95", "sensitivity:0.85"],
                             folds=5, seed=0)
    thresholds = [results[p]["threshold"] for p in results]
    series_specificity = [results[p]["splits"][SERIES_PROXY]["specificity"] for p in results]
    assert thresholds == sorted(thresholds) and series_specificity == sorted(series_specificity)
    assert results["sensitivity:0.99"]["splits"][SERIES_PROXY]["specificity_n"] == 200


def test_the_command_scores_a_trained_model_on_every_split(trained_model_dir, prepared_data, tmp_path):
    output = str(tmp_path / "policies.json")
    args = get_args_parser().parse_args([trained_model_dir, "--data", prepared_data, "--folds", "2", "--device",
                                         "cpu", "--policies", "youden,sensitivity:0.9", "--output", output])
    assert main(args) == 0
    result = json.load(open(output))["results"][trained_model_dir]
    assert set(result["policies"]) == {"youden", "sensitivity:0.9"}
    for split in (VALIDATION, SERIES_PROXY):  # the interval is null here: too few images of a class to resample
        assert 0 <= result["auc"][split]["auc"] <= 1 and {"auc_low", "auc_high"} <= set(result["auc"][split])
    for scored in result["policies"].values():
        assert len(scored["fold_thresholds"]) == 2
        assert SERIES_PROXY in scored["splits"] and VALIDATION in scored["splits"]
        assert all(0 <= r["accuracy"] <= 1 for r in scored["splits"].values())
    assert os.path.isfile(str(tmp_path / "policies.png"))


def _perturbed_copy(model_dir: str, folder) -> str:
    """A copy of the model whose classifier weights carry noise: it ranks the images differently."""
    copy = str(folder / "perturbed")
    shutil.copytree(model_dir, copy)
    path = os.path.join(copy, BEST_CHECKPOINT)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    head = [key for key, value in checkpoint["state_dict"].items() if key.endswith("weight") and value.shape[0] == 2]
    generator = torch.Generator().manual_seed(0)
    weights = checkpoint["state_dict"][head[-1]]
    weights += torch.randn(weights.shape, generator=generator) * weights.std() * 2
    torch.save(checkpoint, path)
    return copy


def test_pairs_report_paired_differences_that_agree_with_each_models_figures(trained_model_dir, prepared_data,
                                                                             tmp_path):
    twin = str(tmp_path / "twin")
    shutil.copytree(trained_model_dir, twin)
    perturbed = _perturbed_copy(trained_model_dir, tmp_path)
    output = str(tmp_path / "pairs.json")
    args = get_args_parser().parse_args([trained_model_dir, twin, perturbed, "--data", prepared_data, "--folds", "2",
                                         "--device", "cpu", "--policies", "youden", "--output", output,
                                         "--pair", trained_model_dir, twin, "--pair", trained_model_dir, perturbed])
    assert main(args) == 0
    figures = json.load(open(output))
    results, pairs = figures["results"], figures["pairs"]
    assert set(pairs) == {f"{trained_model_dir} -> {twin}", f"{trained_model_dir} -> {perturbed}", "mean of 2 pairs"}
    for split in (VALIDATION, SERIES_PROXY):
        same = pairs[f"{trained_model_dir} -> {twin}"][split]
        assert same["auc"]["difference"] == 0 and same["youden"]["specificity"]["difference"] == 0
        changed = pairs[f"{trained_model_dir} -> {perturbed}"][split]
        assert changed["auc"]["difference"] == pytest.approx(
            results[perturbed]["auc"][split]["auc"] - results[trained_model_dir]["auc"][split]["auc"])
        for measure in ("sensitivity", "specificity"):
            assert changed["youden"][measure]["difference"] == pytest.approx(
                results[perturbed]["policies"]["youden"]["splits"][split][measure]
                - results[trained_model_dir]["policies"]["youden"]["splits"][split][measure])
        assert pairs["mean of 2 pairs"][split]["auc"]["difference"] == pytest.approx(changed["auc"]["difference"] / 2)
    assert any(pairs[f"{trained_model_dir} -> {perturbed}"][split]["auc"]["difference"] != 0
               for split in (VALIDATION, SERIES_PROXY))
    assert os.path.isfile(str(tmp_path / "pairs_pairs.png"))
    with pytest.raises(ToolkitError, match="not one of the model dirs"):
        main(get_args_parser().parse_args([trained_model_dir, "--pair", trained_model_dir, twin]))


def test_a_model_dir_without_a_model_is_refused(tmp_path):
    with pytest.raises(ToolkitError, match="no model_best"):
        main(get_args_parser().parse_args([str(tmp_path), "--folds", "2"]))


def test_models_are_named_by_the_fewest_folders_that_tell_them_apart(tmp_path):
    assert model_names(["runs/seeds/s1", "runs/seeds/s2"]) == {"runs/seeds/s1": "s1", "runs/seeds/s2": "s2"}
    assert model_names(["seeds/s1", "mixup/s1", "mixup/s2"]) == {"seeds/s1": "seeds/s1", "mixup/s1": "mixup/s1",
                                                                 "mixup/s2": "mixup/s2"}
    assert model_names(["a/x/s1", "b/x/s1/"]) == {"a/x/s1": "a/x/s1", "b/x/s1/": "b/x/s1"}
    with pytest.raises(ToolkitError, match="given twice"):
        model_names([str(tmp_path / "s1"), str(tmp_path / "s1") + os.sep])
