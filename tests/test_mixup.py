"""train/loop.py mixup: off by default, a seeded run draws the same pairs and weights, the weights follow
Beta(alpha, alpha), a run trains with it and records it, and a negative alpha is refused."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from scipy import stats

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.train.args import get_args_parser
from cxr_jetson.train.loop import mixup_pairs
from cxr_jetson.train.main import main
from tests.conftest import train_args


def test_mixup_is_off_at_zero_and_for_a_single_image():
    generator = torch.Generator().manual_seed(0)
    assert mixup_pairs(8, 0.0, generator) == (1.0, None)
    assert mixup_pairs(1, 0.4, generator) == (1.0, None)


def test_a_seeded_run_draws_the_same_weights_and_partners():
    first, second = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        (weight_a, partners_a), (weight_b, partners_b) = mixup_pairs(16, 0.4, first), mixup_pairs(16, 0.4, second)
        assert weight_a == weight_b and torch.equal(partners_a, partners_b)
        assert sorted(partners_a.tolist()) == list(range(16))


def test_the_weights_follow_beta_alpha_alpha():
    generator = torch.Generator().manual_seed(0)
    weights = np.array([mixup_pairs(4, 0.4, generator)[0] for _ in range(2000)])
    assert ((weights >= 0) & (weights <= 1)).all()
    assert stats.kstest(weights, stats.beta(0.4, 0.4).cdf).pvalue > 0.001


def test_a_run_trains_with_mixup_and_records_it(prepared_data, tmp_path):
    model_dir = str(tmp_path / "mixed")
    assert main(get_args_parser().parse_args(train_args(prepared_data, model_dir, "--epochs", "1", "--mixup", "0.4",
                                                        "--no-input-gate"))) == 0
    assert json.load(open(os.path.join(model_dir, "args.json")))["mixup"] == 0.4
    assert "mixup" in open(os.path.join(model_dir, "MODEL_CARD.md")).read()


def test_a_negative_alpha_is_refused(prepared_data, tmp_path):
    with pytest.raises(ToolkitError, match="--mixup -0.5"):
        main(get_args_parser().parse_args(train_args(prepared_data, str(tmp_path / "m"), "--mixup", "-0.5")))
