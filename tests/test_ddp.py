"""torchrun with two CPU processes (gloo): one job that prints and writes once, whose checkpoints load
and export like a one-process run's, resumes, and keeps the ranks' weights identical."""
from __future__ import annotations

import json
import os
import shutil
from typing import Set

import pytest
import torch
import torch.distributed as dist

from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from cxr_jetson.networks.checkpoint import load_checkpoint
from cxr_jetson.train import distributed
from cxr_jetson.train.distributed import DistributedError, check_launch, process_group
from tests.conftest import REPO, run_script, train_args

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


def torchrun(script: str, *args: str):
    # One thread per process: the two processes share this machine's cores.
    return run_script(*TORCHRUN, script, *args, env={"OMP_NUM_THREADS": "1"}, timeout=240)


def training_outputs(model_dir: str) -> Set[str]:
    """Paths under ``model_dir``, tensorboard's run folders (named by time and host) as one entry.

    The shared one-process fixture also collects what other tests add after training: an ONNX export
    (conftest's exported_onnx) and an evaluation of the test split (tests/test_train.py); those are
    left out.
    """
    found = set()
    for root, _, files in os.walk(model_dir):
        for name in files:
            path = os.path.relpath(os.path.join(root, name), model_dir)
            if path.startswith("tensorboard" + os.sep):
                path = "tensorboard"
            if not (path.endswith(".onnx") or path.startswith("eval_test" + os.sep)):
                found.add(path)
    return found


@pytest.fixture(scope="module")
def ddp_run(prepared_data, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("ddp") / "pneumonia")
    result = torchrun(os.path.join(REPO, "train.py"),
                      *train_args(prepared_data, model_dir, "--epochs", "2", "--device", "cpu"))
    assert result.returncode == 0, result.stderr
    return model_dir, result


def test_two_processes_train_one_model_like_one_process(ddp_run, trained_model_dir):
    model_dir, result = ddp_run
    assert result.stdout.count("=> DistributedDataParallel: 2 processes, backend gloo, global batch 2 x 8 = 16\n") == 1
    for line in ("=> Epoch 0\n", "=> Epoch 1\n", "saved class labels to:", "=> model card:"):
        assert result.stdout.count(line) == 1, line  # rank 0 prints; rank 1 is silent
    assert result.stdout.count("  * Train Loss") == 2

    assert training_outputs(model_dir) == training_outputs(trained_model_dir)
    assert not [name for _, _, files in os.walk(model_dir) for name in files if name.endswith(".tmp")]
    tensorboard = os.path.join(model_dir, "tensorboard")
    if os.path.isdir(tensorboard):  # tensorboard is optional; when there, one writer (rank 0's) logged
        runs = os.listdir(tensorboard)
        assert len(runs) == 1 and len(os.listdir(os.path.join(tensorboard, runs[0]))) == 1

    best = load_checkpoint(os.path.join(model_dir, "model_best.pth.tar"))
    reference = load_checkpoint(os.path.join(trained_model_dir, "model_best.pth.tar"))
    assert list(best["state_dict"]) == list(reference["state_dict"])  # no "module." prefix
    for name, tensor in reference["state_dict"].items():
        assert best["state_dict"][name].shape == tensor.shape, name

    onnx = export_onnx(ExportOptions(model_dir=model_dir))
    assert os.path.getsize(onnx) > 1_000_000


def test_ddp_run_resumes_for_one_more_epoch(ddp_run, prepared_data, tmp_path):
    trained, _ = ddp_run
    model_dir = str(tmp_path / "resumed")
    shutil.copytree(trained, model_dir)
    before = load_checkpoint(os.path.join(model_dir, "checkpoint.pth.tar"))
    result = torchrun(os.path.join(REPO, "train.py"), *train_args(prepared_data, model_dir, "--epochs", "3", "--device",
                                                                   "cpu", "--resume", model_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("resumed from") == 1 and "after epoch 1;" in result.stdout
    assert "=> Epoch 0\n" not in result.stdout and "=> Epoch 1\n" not in result.stdout
    assert result.stdout.count("=> Epoch 2\n") == 1
    after = load_checkpoint(os.path.join(model_dir, "checkpoint.pth.tar"))
    assert after["epoch"] == 2 and [entry["epoch"] for entry in after["history"]] == [0, 1, 2]
    assert json.dumps(after["history"][:2], sort_keys=True) == json.dumps(before["history"], sort_keys=True)


SPY = """
import os, sys
import torch
import cxr_jetson.train.main

train_one_epoch = cxr_jetson.train.main.train_one_epoch
out = sys.argv.pop(1)


def spy(model, *args, **kwargs):  # saves what this rank trained, after each epoch
    stats = train_one_epoch(model, *args, **kwargs)
    parameters = {name: p.detach().clone() for name, p in getattr(model, "module", model).named_parameters()}
    epoch = args[2]  # train_one_epoch(model, split, run, epoch, settings, order=...)
    torch.save(parameters, os.path.join(out, f"rank{os.environ['RANK']}_epoch{epoch}.pt"))
    return stats


cxr_jetson.train.main.train_one_epoch = spy
cxr_jetson.train.main.cli()
"""


def test_ranks_keep_identical_weights_when_the_backbone_unfreezes(prepared_data, tmp_path):
    """DDP averages the gradients of the parameters that train when it wraps the model; the backbone
    that starts training at --unfreeze-at must be wrapped again, or each rank trains its own."""
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    result = torchrun(str(spy), str(tmp_path), *train_args(prepared_data, str(tmp_path / "model"), "--epochs", "2",
                                                           "--unfreeze-at", "1", "--device", "cpu", "--no-tensorboard"))
    assert result.returncode == 0, result.stderr
    for epoch in (0, 1):
        ranks = [torch.load(str(tmp_path / f"rank{rank}_epoch{epoch}.pt")) for rank in (0, 1)]
        assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0]), epoch
    first, second = (torch.load(str(tmp_path / f"rank0_epoch{epoch}.pt")) for epoch in (0, 1))
    assert not torch.equal(first["conv1.weight"], second["conv1.weight"])  # the backbone did train in epoch 1


def test_one_process_has_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group(torch.device("cpu")) as job:
        assert not job.enabled and job.is_main and not dist.is_initialized()
        assert job.shard_order(10, 0, 0) is None and job.augmentation_seed(7) == 7
        module = torch.nn.Linear(2, 2)
        assert job.wrap(module) is module


def test_launches_that_cannot_run_are_one_line_errors(monkeypatch):
    with pytest.raises(DistributedError, match="needs CUDA GPUs"):
        check_launch("nccl", torch.device("cpu"), 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "is_nccl_available", lambda: True)
    with pytest.raises(DistributedError, match="--nproc_per_node 1 or fewer"):
        check_launch("nccl", torch.device("cuda", 0), 2)
    check_launch("nccl", torch.device("cuda", 0), 1)
    with pytest.raises(DistributedError, match="not on meta"):
        distributed.backend_for(torch.device("meta"))
