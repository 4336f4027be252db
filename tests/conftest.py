"""Shared fixtures: a small synthetic download, its prepared layout, a model trained on it, its ONNX.

Everything is made here, in temporary folders; the session-scoped model is trained once (64 px,
two epochs) and reused by the tests that only read it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List

import pytest

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT
from cxr_jetson.data.prepare import get_args_parser as prepare_parser
from cxr_jetson.data.prepare import prepare
from cxr_jetson.data.synthetic import generate
from cxr_jetson.export.onnx_export import ExportOptions, export_onnx
from cxr_jetson.train.args import get_args_parser as train_parser
from cxr_jetson.train.input_gate import write_gate
from cxr_jetson.train.main import main as train_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_COUNTS = {"train": 16, "val": 2, "test": 4}
RESOLUTION = 64


def run_script(script: str, *args: str, env: dict = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one of the repository's entry scripts (or ``-m module``) as a user would."""
    command = [sys.executable] + ([script] if script.startswith("-") else [os.path.join(REPO, script)]) + list(args)
    full_env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def train_args(data: str, model_dir: str, *extra: str) -> List[str]:
    return [data, "--model-dir", model_dir, "--resolution", str(RESOLUTION), "--batch-size", "8",
            "--no-pretrained", "--print-freq", "0", "--seed", "0", "--workers", "2", *extra]


@pytest.fixture(scope="session")
def synthetic_download(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("download"))
    generate(folder, SMALL_COUNTS, seed=0, max_side=500)
    return folder


@pytest.fixture(scope="session")
def prepared_data(synthetic_download, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("prepared") / "pneumonia")
    prepare(prepare_parser().parse_args([synthetic_download, "--output", output, "--val-fraction", "0.25"]))
    return output


@pytest.fixture(scope="session")
def trained_model_dir(prepared_data, tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("model") / "pneumonia")
    assert train_main(train_parser().parse_args(train_args(prepared_data, model_dir, "--epochs", "2"))) == 0
    return model_dir


@pytest.fixture(scope="session")
def recalibrated_model_dir(prepared_data, tmp_path_factory) -> str:
    """The session's recipe with --recalibrate-bn: model_best's batch-norm statistics from its unaugmented images."""
    model_dir = str(tmp_path_factory.mktemp("recalibrated") / "pneumonia")
    args = train_args(prepared_data, model_dir, "--epochs", "2", "--recalibrate-bn", "--no-input-gate")
    assert train_main(train_parser().parse_args(args)) == 0
    return model_dir


@pytest.fixture(scope="session")
def exported_onnx(trained_model_dir) -> str:
    return export_onnx(ExportOptions(model_dir=trained_model_dir))


# The session's validation set is a handful of images, where one flip is more than the guard's 1%: the
# fixture opens the bounds (tests/test_int8.py tests the guard's refusals on their own).
OPEN_BOUNDS = ("--max-auc-drop", "1", "--max-changed", "1")


@pytest.fixture(scope="session")
def int8_model_dir(trained_model_dir, tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("int8") / "model")
    shutil.copytree(trained_model_dir, model_dir)
    for name in os.listdir(model_dir):
        if name.endswith(".onnx"):
            os.unlink(os.path.join(model_dir, name))
    result = run_script("onnx_export.py", "--model-dir", model_dir, "--int8", *OPEN_BOUNDS)
    assert result.returncode == 0, result.stderr
    assert "INT8 model written to" in result.stdout and "refusals changed" in result.stdout
    return model_dir


@pytest.fixture(scope="session")
def gated_model(trained_model_dir, prepared_data, tmp_path_factory) -> str:
    """The session's model, copied, with a gate fitted on its (tiny) data set and exported."""
    model_dir = str(tmp_path_factory.mktemp("gated") / "model")
    os.makedirs(model_dir)
    for name in (BEST_CHECKPOINT, "labels.txt"):
        shutil.copy(os.path.join(trained_model_dir, name), model_dir)
    write_gate(model_dir, BEST_CHECKPOINT, prepared_data, 2, 0.01, (1, 5), overwrite=False, minimum=(4, 1))
    with pytest.raises(ToolkitError, match="--overwrite"):  # a fitted gate is not replaced silently
        write_gate(model_dir, BEST_CHECKPOINT, prepared_data, 2, 0.01, (1, 5), overwrite=False, minimum=(4, 1))
    export_onnx(ExportOptions(model_dir=model_dir))
    return model_dir
