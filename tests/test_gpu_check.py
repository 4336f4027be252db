"""The prepared GPU check (bench/gpu_check.py) rehearsed on the CPU: its smoke mode end to end on a small
generated data set (benchmark.py left out: another change's script, a minute of CPU here), and the parts
a GPU run depends on (the process-group kill at a step's limit, the data set whose links did not travel,
a checkout without benchmark.py)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from bench import gpu_check
from bench.gpu_check import Plan, missing_input, run_command
from bench.gpu_check_data import choose_data, stage_data
from bench.gpu_check_summary import print_summary, summarise
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.data.synthetic import generate
from tests.conftest import REPO, run_script

STEP_NAMES = ["environment", "train_recipes", "onnx_export", "gpu_latency", "benchmark"]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """One smoke run: 16 train and 8 val images per class, 64 px, one epoch of each recipe, on the CPU."""
    folder = tmp_path_factory.mktemp("gpu_check")
    data = generate(str(folder / "download"), {"train": 16, "val": 8}, seed=0, max_side=300)
    out = folder / "out"
    result = run_script("-m", "bench.gpu_check", "--smoke", "--device", "cpu", "--epochs", "1", "--data", data,
                        "--out", str(out), "--skip", "benchmark", timeout=300)
    with open(out / "gpu_check.json", encoding="utf-8") as handle:
        return result, json.load(handle), out


def test_every_step_is_recorded_in_order_with_its_outcome(smoke_report):
    result, report, out = smoke_report
    steps = {step["name"]: step for step in report["steps"]}
    assert [step["name"] for step in report["steps"]] == STEP_NAMES
    for name in ("environment", "train_recipes", "onnx_export"):
        assert (steps[name]["status"], steps[name]["rc"]) == ("ok", 0), steps[name]
    failed = [step for step in report["steps"] if step["status"] in ("failed", "timeout")]
    assert result.returncode == (1 if failed else 0), result.stdout + result.stderr
    assert report["smoke"] and report["epochs"] == 1 and report["resolution"] == 64
    log = (out / "gpu_check.log").read_text(encoding="utf-8")
    assert "== [2/5] train_recipes" in log and "== summary" in log


def test_gpu_only_steps_are_skipped_with_a_reason_without_cuda(smoke_report):
    _, report, _ = smoke_report
    steps = {step["name"]: step for step in report["steps"]}
    environment = report["environment"]
    assert environment["modules"]["torch"]["ok"] and environment["cxr_jetson"] == REPO
    if not environment["cuda_available"]:
        assert (steps["gpu_latency"]["status"], steps["gpu_latency"]["rc"]) == ("skipped", None)
        assert "CUDA" in steps["gpu_latency"]["reason"]
    assert (steps["benchmark"]["status"], steps["benchmark"]["reason"]) == ("skipped", "left out with --skip")


def test_a_checkout_without_benchmark_py_records_it_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "REPO", str(tmp_path))
    plan = Plan(str(tmp_path / "out"), str(tmp_path), str(tmp_path / "data"), None, "cpu", 1, 64, None)
    assert missing_input("benchmark", plan) == "benchmark.py not present"
    assert missing_input("onnx_export", plan).startswith("no trained model")


def test_the_training_step_times_both_recipes_and_scores_every_split(smoke_report):
    _, report, out = smoke_report
    training = report["summary"]["training"]
    assert training["epochs"] == 1 and training["device"] == "cpu"
    for recipe in ("ours", "jetson"):
        figures = training["recipes"][recipe]
        assert figures["seconds"] > 0 and figures["median_epoch_s"] > 0 and figures["images_per_second"] > 0
        assert {"val", "val~mixed", "series"} <= set(figures["metrics"])
    assert set(training["speedup"]) == {"seconds", "median_epoch_s", "projected_35_epochs_s"}
    assert (out / "train_recipes.json").is_file() and (out / "train_recipes.png").is_file()


def test_the_summary_reads_what_gpu_latency_and_benchmark_write(tmp_path):
    """The GPU-only figures, in the format bench/gpu_latency.py writes them (no GPU here to make them)."""
    rows = {f"batch{b}": {"eager_fp32_ms": 2.0 * b, "ours_fp16_graph_ms": 0.5 * b, "eager_images_per_second": 500 / b,
                          "ours_images_per_second": 2000 / b, "ratio": 4.0} for b in (1, 64)}
    (tmp_path / "gpu_latency.json").write_text(json.dumps(dict(rows, gpu="NVIDIA H200", torch="2.11")))
    (tmp_path / "benchmark.json").write_text(json.dumps({"rows": []}))
    summary = summarise(str(tmp_path))
    assert summary["latency"]["batch1"]["ratio"] == 4.0 and summary["benchmark"] == {"rows": []}
    lines = []
    print_summary(summary, lines.append)
    assert lines == ["latency batch1: eager FP32 2.000 ms, FP16 + CUDA graph 0.500 ms, 4.00x",
                     "latency batch64: eager FP32 128.000 ms, FP16 + CUDA graph 32.000 ms, 4.00x"]


def test_a_step_past_its_limit_is_killed_with_its_children():
    lines = []
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print('started', flush=True); time.sleep(60)"
    outcome = run_command([sys.executable, "-c", code], 2, lines.append)
    assert outcome["timed_out"] and outcome["rc"] != 0 and outcome["seconds"] < 30
    assert lines == ["started"] and outcome["last_line"] == "started"


def test_links_that_did_not_travel_are_refused_and_staging_copies_their_targets(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for split in ("train", "val"):
        for label in ("NORMAL", "PNEUMONIA"):
            (tmp_path / "linked" / split / label).mkdir(parents=True)
            (images / f"{split}{label}.jpeg").write_bytes(b"jpeg")
            os.symlink(images / f"{split}{label}.jpeg", tmp_path / "linked" / split / label / "a.jpeg")
    assert stage_data(str(tmp_path / "linked"), str(tmp_path / "staged")) == {"train": 2, "val": 2}
    assert not os.path.islink(tmp_path / "staged" / "train" / "NORMAL" / "a.jpeg")
    for path in images.iterdir():
        path.unlink()
    with pytest.raises(ToolkitError, match="--stage"):
        choose_data(str(tmp_path / "linked"))
    assert choose_data(str(tmp_path / "staged")) == str(tmp_path / "staged")
