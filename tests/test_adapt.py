"""Site adaptation (train/site_shift.py, adapt.py): the class prior by EM, batch-norm statistics measured
on the site's images at the source's class shares, a threshold whose sensitivity bound holds, and the
command's new model dir, refusals and provenance."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from scipy import stats

from cxr_jetson.core.files import sha256_file
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.core.preprocess import PreprocessSpec, normalize
from cxr_jetson.data.synthetic import generate
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.networks.model import build_model
from cxr_jetson.train.site_shift import (
    SiteDataError,
    batch_norm_layers,
    class_balance_weights,
    em_prior,
    guaranteed_threshold,
    positives_needed,
    reestimate_batch_norm,
    sensitivity_lower_bound,
    systematic_resample,
)
from tests.conftest import run_script


def _binormal_posteriors(rng: np.random.Generator, count: int, share: float, source_share: float):
    """Scores N(1.5, 1) for positives and N(0, 1) for negatives, and their exact posteriors under the
    source's class share."""
    labels = rng.random(count) < share
    scores = rng.normal(1.5 * labels, 1.0)
    likelihoods = np.stack([stats.norm.pdf(scores, 0, 1), stats.norm.pdf(scores, 1.5, 1)], 1)
    joint = likelihoods * np.array([1 - source_share, source_share])
    return joint / joint.sum(1, keepdims=True), labels


@pytest.mark.parametrize("site_share", [0.2, 0.5, 0.625])
def test_em_recovers_the_site_class_prior(site_share):
    posteriors, labels = _binormal_posteriors(np.random.default_rng(0), 3000, site_share, 0.75)
    prior, adjusted = em_prior(posteriors, np.array([0.25, 0.75]))
    assert prior[1] == pytest.approx(labels.mean(), abs=0.03)
    assert adjusted.mean(0) == pytest.approx(prior, abs=1e-6)   # EM's fixed point
    assert posteriors[:, 1].mean() != pytest.approx(labels.mean(), abs=0.03) or site_share == 0.75


def test_class_balance_weights_give_the_source_shares():
    responsibilities = np.zeros((100, 2))
    responsibilities[:30, 1] = responsibilities[30:, 0] = 1.0   # a site with 30% positives
    weights = class_balance_weights(responsibilities, np.array([0.7, 0.3]), np.array([0.25, 0.75]))
    drawn = systematic_resample(weights)
    assert np.mean(drawn < 30) == pytest.approx(0.75, abs=0.01)


def test_systematic_resampling_draws_each_image_its_expected_count():
    weights = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    counts = np.bincount(systematic_resample(weights * 10, seed=3), minlength=5)
    expected = weights / weights.sum() * 5
    assert np.all(np.abs(counts - expected) < 1) and counts[3] == 0
    assert systematic_resample(np.ones(9)).tolist() == list(range(9))


def test_batch_norm_statistics_become_the_sites():
    """The first batch norm's running mean becomes the mean of its input over the site's images (the
    statistics move to the site's), and no learned weight changes."""
    torch.manual_seed(0)
    model = build_model("resnet18", 2).eval()
    spec = PreprocessSpec(resolution=64)
    rng = np.random.default_rng(0)
    site = np.clip(rng.normal(180, 30, (24, 64, 64)), 0, 255).astype(np.uint8)   # brighter than anything seen
    learned = {name: value.clone() for name, value in model.named_parameters()}
    inputs = torch.from_numpy(normalize(site, spec))
    with torch.no_grad():
        site_mean = model.conv1(inputs).mean(dim=(0, 2, 3))
    before = model.bn1.running_mean.clone()
    assert reestimate_batch_norm(model, site, spec, torch.device("cpu"), batch_size=8) == len(batch_norm_layers(model))
    assert torch.allclose(model.bn1.running_mean, site_mean, atol=1e-5)
    assert (model.bn1.running_mean - site_mean).abs().max() < (before - site_mean).abs().max() / 100
    assert all(torch.equal(learned[name], value) for name, value in model.named_parameters())
    assert not model.training and model.bn1.momentum == 0.1  # back to evaluation, momentum restored


def test_guaranteed_threshold_holds_its_bound_in_simulation():
    """Positives' scores ~ Beta(5, 2): in 95% of labelled sets or more, the sensitivity the threshold really
    has (1 - CDF at the threshold) is at least the target."""
    rng = np.random.default_rng(0)
    target, held = 0.9, []
    for _ in range(2000):
        scores = rng.beta(5, 2, 100)
        threshold, bound, caught = guaranteed_threshold(scores, target)
        assert bound >= target and threshold <= np.sort(scores)[100 - caught]
        assert np.sum(scores >= threshold) == caught
        held.append(1 - stats.beta.cdf(threshold, 5, 2) >= target)
    assert np.mean(held) >= 0.94   # 0.95 nominal, less two standard errors of 2000 draws


def test_too_few_positives_cannot_guarantee_a_sensitivity():
    assert positives_needed(0.9) == 29
    assert sensitivity_lower_bound(29, 29) >= 0.9 > sensitivity_lower_bound(28, 28)
    with pytest.raises(SiteDataError, match="at least 29"):
        guaranteed_threshold(np.linspace(0.5, 1, 28), 0.9)


@pytest.fixture(scope="module")
def site_download(tmp_path_factory) -> str:
    """A second synthetic 'site': other patients, drawn with another seed, labelled by folder."""
    folder = str(tmp_path_factory.mktemp("site"))
    return os.path.join(generate(folder, {"site": 24}, seed=7, max_side=400), "site")


def _adapt(model_dir: str, output: str, *extra: str):
    return run_script("adapt.py", "--model-dir", model_dir, "--output", output, "--workers", "2", *extra)


def test_adapt_writes_a_model_dir_that_exports_and_records_its_site(recalibrated_model_dir, site_download, tmp_path):
    output = str(tmp_path / "site-a")
    result = _adapt(recalibrated_model_dir, output, site_download, "--min-images", "20", "--labelled", site_download,
                    "--min-sensitivity", "0.85")
    assert result.returncode == 0, result.stderr
    assert "batch-norm layers re-estimated on 48 site images" in result.stdout
    assert "sensitivity at least" in result.stdout
    checkpoint = load_checkpoint(os.path.join(output, BEST_CHECKPOINT))
    record = checkpoint["adaptation"]
    assert record["source"]["checkpoint_sha256"] == sha256_file(os.path.join(recalibrated_model_dir, BEST_CHECKPOINT))
    with open(os.path.join(output, "site_manifest.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and all(row["sha256"] == sha256_file(row["path"]) for row in rows[:3])
    assert record["site"]["manifest_sha256"] == sha256_file(os.path.join(output, "site_manifest.csv"))
    assert record["labelled"]["sensitivity_lower_bound"] >= 0.85
    assert checkpoint["threshold"] != load_checkpoint(os.path.join(recalibrated_model_dir, BEST_CHECKPOINT))["threshold"]
    card = open(os.path.join(output, "MODEL_CARD.md")).read()
    assert "## Site adaptation" in card and record["site"]["manifest_sha256"] in card
    assert os.path.isfile(os.path.join(output, "labels.txt"))
    exported = run_script("onnx_export.py", "--model-dir", output)
    assert exported.returncode == 0, exported.stderr
    again = _adapt(recalibrated_model_dir, output, site_download, "--min-images", "20")
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_adapting_on_the_source_site_keeps_its_decisions(recalibrated_model_dir, prepared_data, tmp_path):
    """Adapted on the source's own training images, a model whose statistics are those images' (--recalibrate-bn)
    decides them as before (within 10% on this toy model: the images are drawn again to the class shares EM
    estimates)."""
    output = str(tmp_path / "same-site")
    result = _adapt(recalibrated_model_dir, output, os.path.join(prepared_data, "train"), "--min-images", "20")
    assert result.returncode == 0, result.stderr
    changed = int(result.stdout.split(" site decisions changed")[0].rsplit("; ", 1)[1].split(" of ")[0])
    assert changed <= 0.1 * load_checkpoint(os.path.join(output, BEST_CHECKPOINT))["adaptation"]["site"]["images"]


@pytest.mark.parametrize("case", ["too_few", "same_folder", "one_class_labelled", "few_positives"])
def test_adapt_refuses_what_cannot_support_it(case, recalibrated_model_dir, site_download, tmp_path):
    output = str(tmp_path / "out")
    if case == "too_few":
        result = _adapt(recalibrated_model_dir, output, site_download)
        expected = "adaptation needs at least 100"
    elif case == "same_folder":
        result = _adapt(recalibrated_model_dir, recalibrated_model_dir, site_download, "--min-images", "20")
        expected = "never overwritten"
    elif case == "one_class_labelled":
        labelled = tmp_path / "labelled"
        os.makedirs(labelled / "NORMAL")
        os.symlink(os.path.join(site_download, "PNEUMONIA"), labelled / "PNEUMONIA")
        result = _adapt(recalibrated_model_dir, output, site_download, "--min-images", "20", "--labelled", str(labelled))
        expected = "--labelled"
    else:
        result = _adapt(recalibrated_model_dir, output, site_download, "--min-images", "20", "--labelled", site_download,
                        "--min-sensitivity", "0.95")
        expected = "at least 59 are needed"
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.isfile(os.path.join(output, BEST_CHECKPOINT))
