"""bench/train_step.py: the default training step, timed by phase, really trains the network it times."""
from __future__ import annotations

import pytest
import torch

from bench.train_step import CONVOLUTIONS, PHASES, DefaultStep, get_args_parser, main, profiled_operators, time_phases
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.train.args import DEFAULTS
from cxr_jetson.train.loop import training_step


def test_the_step_is_train_pys_default_and_updates_the_weights():
    step = DefaultStep(batch_size=2, device=torch.device("cpu"))
    assert step.config.augment == DEFAULTS.augment and step.spec.equalize == step.config.equalize
    assert step.images.shape == (2, step.config.resolution, step.config.resolution)
    before = step.model.fc.weight.detach().clone()
    timings = step()
    assert set(timings) == set(PHASES) and all(value > 0 for value in timings.values())
    assert not torch.equal(before, step.model.fc.weight)


def test_the_timed_step_is_the_trainers_own_with_one_mark_per_phase():
    step = DefaultStep(batch_size=2, device=torch.device("cpu"))
    marks = []
    loss, outputs = training_step(step.model, step.run, step.images, step.targets, step.settings,
                                  lambda: marks.append(len(marks)))
    assert marks == list(range(len(PHASES)))
    assert outputs.shape == (2, 2) and torch.isfinite(loss)


def test_phases_add_up_to_the_step_and_the_profile_lists_every_convolution_and_the_costliest_others():
    step = DefaultStep(batch_size=2, device=torch.device("cpu"))
    medians = time_phases(step, steps=1)
    assert medians["step"] == pytest.approx(sum(medians[phase] for phase in PHASES))
    rows = profiled_operators(step, steps=1, others=3)
    forward = [row for row in rows if row["operator"] == "aten::mkldnn_convolution"]
    assert len([row for row in rows if row["operator"] not in CONVOLUTIONS]) == 3
    # ResNet-18: 20 convolutions (the stem, 16 in the blocks, 3 downsampling shortcuts), each once per step
    assert sum(row["calls_per_step"] for row in forward) == 20
    assert rows == sorted(rows, key=lambda row: -row["ms_per_step"])


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(ToolkitError, match="--batch-size"):
        main(get_args_parser().parse_args(["--batch-size", "1"]))
    assert main(get_args_parser().parse_args(["--batch-size", "2", "--steps", "1"])) == 0
    assert "median ms per step" in capsys.readouterr().out
