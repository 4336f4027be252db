"""benchmark.py: every back-end and precision this machine has (ONNX Runtime FP32 and INT8, torch) on a
labelled folder, as a table, JSON and a picture; what cannot run is one line, not a crash."""
from __future__ import annotations

import json
import os

from tests.conftest import run_script


def test_benchmark_measures_every_available_candidate(int8_model_dir, prepared_data, tmp_path):
    result = run_script("benchmark.py", "--model-dir", int8_model_dir, os.path.join(prepared_data, "val"),
                        "--runs", "5", "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "b.json").read_text())
    rows = {(row["backend"], row["requested"]): row for row in record["rows"]}
    assert list(rows)[:2] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]  # the reference first
    assert ("torch", "default") in rows
    reference, int8 = rows[("onnxruntime", "fp32")], rows[("onnxruntime", "int8")]
    assert reference["precision"] == "fp32" and int8["precision"] == "int8" and int8["int8_form"] == "tensorrt"
    assert int8["model_file"].endswith(".int8.onnx") and int8["size_mb"] > 0
    for row in (reference, int8):
        metrics = row["metrics"]
        assert metrics["n"] == record["images"] > 0
        for key in ("accuracy", "sensitivity", "specificity"):
            assert metrics[key]["low"] <= metrics[key]["value"] <= metrics[key]["high"]
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"] and row["throughput"]["images_per_second"] > 0
    assert reference["delta"]["auc"] == 0.0 and "flipped" in int8
    assert 0 <= int8["flipped"] <= record["images"]
    assert (tmp_path / "b.png").stat().st_size > 10_000
    assert "p50 ms" in result.stdout and "onnxruntime int8" not in result.stderr


def test_benchmark_refuses_a_folder_without_the_model_classes(exported_onnx, trained_model_dir, tmp_path):
    (tmp_path / "images" / "CATS").mkdir(parents=True)
    result = run_script("benchmark.py", "--model-dir", trained_model_dir, str(tmp_path / "images"),
                        "--backends", "onnxruntime", "--json", str(tmp_path / "b.json"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "NORMAL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_benchmark_says_when_no_back_end_can_run(exported_onnx, trained_model_dir, prepared_data, tmp_path):
    result = run_script("benchmark.py", "--model-dir", trained_model_dir, os.path.join(prepared_data, "val"),
                        "--backends", "tensorrt", "--json", str(tmp_path / "b.json"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no back-end to benchmark" in result.stderr
