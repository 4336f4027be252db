"""A training run killed with SIGKILL mid-epoch resumes from its last completed epoch, exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch

from cxr_jetson.networks.checkpoint import load_checkpoint
from tests.conftest import REPO, run_script, train_args

EPOCHS = "3"


def _args(data: str, model_dir: str) -> list:
    # Batch 2 at 96 px with a line per batch: epochs of several steps, so the kill lands inside one.
    return train_args(data, model_dir, "--epochs", EPOCHS, "--batch-size", "2", "--resolution", "96",
                      "--print-freq", "1")


def kill_during_epoch(arguments: list, epoch: int) -> None:
    """Run train.py with ``arguments`` (which must include --print-freq 1) and SIGKILL it inside ``epoch``."""
    command = [sys.executable, os.path.join(REPO, "train.py"), *arguments]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=REPO)
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if line.startswith(f"Epoch: [{epoch}][") and not line.startswith(f"Epoch: [{epoch}][ 0/"):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL


def test_sigkill_then_resume_continues_exactly(prepared_data, tmp_path):
    reference_dir, killed_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
    reference = run_script("train.py", *_args(prepared_data, reference_dir))
    assert reference.returncode == 0, reference.stderr

    kill_during_epoch(_args(prepared_data, killed_dir), epoch=1)
    survivor = load_checkpoint(os.path.join(killed_dir, "checkpoint.pth.tar"))
    assert survivor["epoch"] == 0  # killed inside epoch 1: the last completed epoch is 0
    assert not [name for name in os.listdir(killed_dir) if name.endswith(".tmp")]  # no torn files left
    best_before = survivor["best"]

    resumed = run_script("train.py", *_args(prepared_data, killed_dir), "--resume",
                         os.path.join(killed_dir, "checkpoint.pth.tar"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "after epoch 0" in resumed.stdout
    assert f"best {best_before['metric']} {best_before['value']:.4f} at epoch {best_before['epoch']}" in resumed.stdout
    assert "=> Epoch 0\n" not in resumed.stdout  # epoch 0 was not trained again

    final = load_checkpoint(os.path.join(killed_dir, "checkpoint.pth.tar"))
    expected = load_checkpoint(os.path.join(reference_dir, "checkpoint.pth.tar"))
    assert final["epoch"] == expected["epoch"] == int(EPOCHS) - 1
    assert json.dumps(final["history"][0], sort_keys=True) == json.dumps(survivor["history"][0], sort_keys=True)
    # Model, optimizer, scheduler and RNG state all came back: the run ends where the uninterrupted one does.
    for name, tensor in expected["state_dict"].items():
        assert torch.allclose(final["state_dict"][name].float(), tensor.float(), atol=1e-5), name
    assert final["best"]["epoch"] == expected["best"]["epoch"]
    for before, after in zip(expected["history"], final["history"]):
        assert abs(before["val_loss"] - after["val_loss"]) < 1e-4
