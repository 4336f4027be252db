"""The JetPack path as far as this machine can prove it: the install pins resolve for each JetPack's
Python on aarch64, the device path runs under numpy 1.24 and 2.x, the native installer and the
first-hour check do what they say, and streams and cameras get jetson-utils' decoders.

The resolution and numpy 1.24 checks use the package index (CI reaches it); without it they skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest

from cxr_jetson.edge.device_check import demo_onnx
from cxr_jetson.edge.tensorrt.cuda import CudaError, SystemCudaRuntime, open_cuda
from cxr_jetson.edge.video_source import CaptureOptions, rtsp_pipeline
from tests.conftest import REPO, run_script
from tests.test_docker import R35, R36, host_env, script

DOCKER = os.path.join(REPO, "docker")
# What the device path installs on a Jetson (pyproject's tensorrt and dicom extras, plus ONNX Runtime).
DEVICE_REQUIREMENTS = ["numpy>=1.21", "tqdm>=4.60", "pydicom>=2.3", "cuda-python>=11.4", "onnx>=1.12", "onnxruntime"]
JETPACKS = {"5.1": ("11.4", "3.8"), "6.1": ("12.6", "3.10")}


def _pins(cuda: str, tmp_path) -> str:
    result = subprocess.run([sys.executable, "-S", os.path.join(DOCKER, "pin_base_packages.py"), "--cuda-version", cuda],
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"constraints-{cuda}.txt"
    path.write_text(result.stdout)
    return str(path)


@pytest.mark.parametrize("jetpack", sorted(JETPACKS))
def test_the_pins_resolve_for_the_jetpacks_python_on_aarch64(jetpack, tmp_path):
    cuda, python = JETPACKS[jetpack]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report",
               str(report), "--python-version", python, "--platform", "manylinux2014_aarch64", "--platform",
               "manylinux_2_17_aarch64", "--only-binary=:all:", "-c", _pins(cuda, tmp_path), *DEVICE_REQUIREMENTS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and ("Network" in result.stderr or "connection" in result.stderr.lower()):
        pytest.skip(f"the package index is not reachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    numpy_version = tuple(int(part) for part in chosen["numpy"].split(".")[:2])
    cuda_python = chosen["cuda-python"]
    if jetpack == "5.1":  # TensorRT 8.5.2's nptype needs numpy < 1.24; cuda-python 11.x for the 11.4 driver
        assert numpy_version < (1, 24) and cuda_python.startswith("11.")
    else:  # the CUDA 12.6 driver: cuda-python 12.6, never 12.9's statically linked runtime
        assert numpy_version < (2, 0) and cuda_python.startswith("12.6")


@pytest.fixture(scope="module")
def numpy_124(tmp_path_factory) -> str:
    """A virtual environment with numpy 1.24 and the device path's dependencies (JetPack 5's numpy era)."""
    folder = str(tmp_path_factory.mktemp("numpy124"))
    venv.create(folder, with_pip=True)
    python = os.path.join(folder, "bin", "python")
    result = subprocess.run([python, "-m", "pip", "install", "--quiet", "numpy==1.24.*", "opencv-python-headless<4.11",
                             "onnxruntime", "tqdm", "pydicom"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"numpy 1.24 could not be installed here: {result.stderr.strip().splitlines()[-1]}")
    return python


def test_the_device_path_runs_on_numpy_1_24(numpy_124, exported_onnx, prepared_data, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    probe = ("import numpy, sys; from cxr_jetson.edge.tensorrt.api import numpy_dtype; import types; "
             "[numpy_dtype(types.SimpleNamespace(name=n)) for n in ('FLOAT', 'HALF', 'INT8', 'INT32', 'BOOL', 'UINT8')]; "
             "import cxr_jetson.edge.classify; print(numpy.__version__, 'torch' in sys.modules)")
    result = subprocess.run([numpy_124, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [result.stdout.split()[0], "False"] and result.stdout.startswith("1.24.")
    out = tmp_path / "out"
    result = subprocess.run([numpy_124, os.path.join(REPO, "classify.py"), os.path.join(prepared_data, "test"), str(out),
                             "--model", os.path.dirname(exported_onnx), "--backend", "onnxruntime", "-q"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "results.csv").read_text().count(",ok,") == 8


def test_the_device_path_has_no_numpy_api_removed_in_1_24_or_2():
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    result = subprocess.run([ruff, "check", "--select", "NPY", "core", "edge", "data"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("release, parser, cuda", [(R35, "libnvonnxparsers8", "11.4"), (R36, "libnvonnxparsers10", "12.6")])
def test_native_install_takes_tensorrt_from_the_jetpack_and_pins_its_cuda(tmp_path, release, parser, cuda):
    result = script("install_native.sh", host_env(tmp_path, release), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    apt = next(line for line in lines if "apt-get install" in line)
    assert "python3-libnvinfer" in apt and parser in apt and "python3-opencv" in apt and "gstreamer1.0-plugins-bad" in apt
    assert any(f"pin_base_packages.py --cuda-version {cuda}" in line for line in lines)
    assert any("--system-site-packages" in line for line in lines)
    assert "check_image.py --gstreamer --onnx-parser" in lines[-1]


@pytest.mark.parametrize("release, message", [(None, "installs on a Jetson"),
                                              ("# R35 (release), REVISION: 1.0, GCID: 1", "JetPack 5.0")])
def test_native_install_refuses_other_machines_in_one_line(tmp_path, release, message):
    result = script("install_native.sh", host_env(tmp_path, release), "--dry-run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_first_hour_check_stops_at_its_first_gpu_check_here():
    result = subprocess.run(["bash", os.path.join(DOCKER, "jetson_check.sh")], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    lines = result.stdout.splitlines()
    if not lines[0].startswith("warn  JetPack"):
        pytest.skip("this is a Jetson: the check runs through")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert [line.split()[1] for line in lines] == ["JetPack", "Python", "TensorRT"] or \
        [line.split()[1] for line in lines][:4] == ["JetPack", "Python", "TensorRT", "CUDA"]
    assert lines[-1].startswith("FAIL") and result.stderr.count("\n") == 1 and "GPU path cannot run here" in result.stderr


def test_the_first_hour_demo_model_is_a_toolkit_onnx(tmp_path):
    from cxr_jetson.edge.deployed_model import DeployedModel
    demo_onnx(str(tmp_path))
    model = DeployedModel(str(tmp_path), "onnxruntime")
    probabilities = model.probabilities(np.full((2, 64, 64), 128, np.uint8))
    assert model.labels == ["NORMAL", "PNEUMONIA"] and probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)


def test_the_machines_own_cuda_runtime_is_called_and_its_error_named():
    try:
        runtime = SystemCudaRuntime()
    except ImportError as missing:
        pytest.skip(f"no libcudart here: {missing}")
    except CudaError as err:  # no driver: the library loaded, the call ran and its error was read back
        assert "cudaGetDeviceCount failed: cudaError" in str(err)
    else:
        assert runtime.identity().name
        runtime.close()
        return
    with pytest.raises(CudaError, match="libcudart"):
        open_cuda()


def test_rtsp_streams_get_jetson_utils_decoders():
    hardware = rtsp_pipeline("rtsp://camera:554/stream", CaptureOptions(decoder="v4l2"))
    assert hardware.startswith("rtspsrc location=rtsp://camera:554/stream latency=200 ! queue ! rtph264depay ! ")
    assert "nvv4l2decoder" in hardware and "nvvidconv" in hardware and hardware.endswith("appsink drop=true max-buffers=2")
    cpu = rtsp_pipeline("rtsp://camera/stream", CaptureOptions(decoder="cpu", codec="h265", latency=50))
    assert "latency=50" in cpu and "rtph265depay ! h265parse ! avdec_h265" in cpu and "nvv4l2decoder" not in cpu


def test_a_hardware_decoder_without_gstreamer_is_a_one_line_error(exported_onnx):
    result = run_script("classify.py", "rtsp://127.0.0.1:9/none", "--model", os.path.dirname(exported_onnx),
                        "--input-decoder", "v4l2")
    import cv2
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    assert result.returncode == 2 and "needs an RTSP stream and an OpenCV built with GStreamer" in result.stderr
