"""classify.py as a runner: video in and out, live-source reconnection, sinks, the web view, heatmaps."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest

from cxr_jetson.core.preprocess import load_for_network
from cxr_jetson.data.synthetic import synthetic_xray
from cxr_jetson.edge.deployed_model import DeployedModel
from cxr_jetson.edge.heatmap import evidence_map
from cxr_jetson.edge.video_source import CaptureOptions, VideoSource, VideoSourceError
from cxr_jetson.train.args import get_args_parser as train_parser
from cxr_jetson.train.main import main as train_main
from tests.browser import NO_BROWSER, browser_command, chromium, rendered_dom
from tests.conftest import REPO, run_script
from tests.forked_cli import ctrl_c_reaches_it

FRAMES = 12
ARTIFACTS = os.path.join(REPO, "test-artifacts")


@pytest.fixture(scope="module")
def xray_video(tmp_path_factory) -> str:
    """An mp4 written with OpenCV: the stand-in for a camera (same code path as /dev/video0 once open)."""
    path = str(tmp_path_factory.mktemp("video") / "xrays.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 256))
    rng = np.random.default_rng(3)
    for index in range(FRAMES):
        writer.write(cv2.cvtColor(synthetic_xray(rng, index % 2 == 1, 256, 320), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def _frame_count(path: str) -> int:
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_video_in_video_out(xray_video, exported_onnx, tmp_path):
    out, results = tmp_path / "annotated.mp4", tmp_path / "results.jsonl"
    result = run_script("classify.py", xray_video, str(out), "--model", exported_onnx, "--results", str(results),
                        "--heatmap", "-q")
    assert result.returncode == 0, result.stderr
    assert _frame_count(str(out)) == FRAMES
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok"] * FRAMES
    assert f"classified {FRAMES} frame(s)" in result.stdout


@pytest.mark.parametrize("output, expected", [("folder", "frame_000011.jpg"), ("out_%03d.jpg", "out_011.jpg")])
def test_video_to_folder_and_printf_pattern(xray_video, exported_onnx, tmp_path, output, expected):
    target = tmp_path / "folder" if output == "folder" else tmp_path / output
    result = run_script("classify.py", xray_video, str(target), "--model", exported_onnx, "-q")
    assert result.returncode == 0, result.stderr
    written = sorted(f for f in os.listdir(target if output == "folder" else tmp_path) if f.endswith(".jpg"))
    assert len(written) == FRAMES and written[-1] == expected


def test_video_loops_on_request(xray_video, exported_onnx):
    result = run_script("classify.py", xray_video, "--model", exported_onnx, "--input-loop", "1", "-q")
    assert result.returncode == 0 and f"classified {2 * FRAMES} frame(s)" in result.stdout


def test_live_source_reconnects_with_back_off_then_gives_up(xray_video, tmp_path, capsys):
    video = str(tmp_path / "camera.mp4")
    shutil.copy(xray_video, video)
    source = VideoSource(video, CaptureOptions(retries=2), live=True)
    seen = 0
    with pytest.raises(VideoSourceError, match="did not come back after 2 attempts"):
        for _, image, _ in source.frames():
            seen += 1
            assert image.shape == (256, 320, 3)
            if seen == FRAMES + 3:
                os.remove(video)  # the camera disappears for good during its second "connection"
    assert seen >= FRAMES + 3 and source.reconnects == 1  # the first loss was recovered
    log = capsys.readouterr().err
    assert "reconnecting in 0.5 s (attempt 1 of 2)" in log and "reconnecting in 1.0 s (attempt 2 of 2)" in log


def test_ctrl_c_finalises_the_video_and_prints_a_summary(xray_video, exported_onnx, tmp_path):
    out = tmp_path / "live.mp4"
    command = [sys.executable, os.path.join(REPO, "classify.py"), xray_video, str(out), "--model", exported_onnx,
               "--input-loop", "-1", "-q"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1"),
                               preexec_fn=ctrl_c_reaches_it,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = []
    for line in process.stdout:  # the pipeline starts once the output is announced
        started.append(line)
        if line.startswith("output:"):
            break
    time.sleep(3)  # a few passes over the looping video
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    stdout = "".join(started) + stdout
    assert process.returncode == 130, stderr  # as a shell reports Ctrl+C, with everything so far kept
    assert "stopped by Ctrl+C" in stdout
    classified = int(re.search(r"classified (\d+) frame", stdout).group(1))
    assert classified > 0 and _frame_count(str(out)) == classified  # every frame made it into a playable file


def test_profile_prints_every_stage(xray_video, exported_onnx):
    result = run_script("classify.py", xray_video, "--model", exported_onnx, "--profile", "-q")
    assert result.returncode == 0, result.stderr
    for stage in ("decode", "preprocess", "inference", "postprocess", "overlay", "encode", "end to end"):
        assert re.search(rf"^  {stage} +[0-9.]+ ms", result.stdout, re.MULTILINE), stage


@pytest.mark.parametrize("arguments, message", [
    (["INPUT", "display://0"], "needs a display"),
    (["ftp://example.com/x.mp4"], "unknown input scheme ftp://"),
    (["INPUT", "ws://host:1/x"], "unknown output ws://host:1/x"),
    (["INPUT", "single.jpg"], "is one file but the input has several images or frames"),
    (["/dev/video9"], "camera /dev/video9 not found"),
    (["csi://0"], "needs OpenCV built with GStreamer"),
    (["EMPTY"], "cannot open video"),
    (["INPUT", "http://127.0.0.1:BUSY"], "is already in use"),
])
def test_bad_sources_and_sinks_are_one_line_errors(arguments, message, xray_video, exported_onnx, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        values = {"INPUT": xray_video, "EMPTY": str(empty)}
        arguments = [values.get(a, a).replace("BUSY", port) for a in arguments]
        if arguments[-1] == "single.jpg":
            arguments[-1] = str(tmp_path / "single.jpg")
        if message.startswith("needs OpenCV built") and cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            pytest.skip("this OpenCV has GStreamer: csi://0 would try the camera")
        result = run_script("classify.py", *arguments, "--model", exported_onnx, env={"DISPLAY": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.skipif(not chromium(), reason=NO_BROWSER)
def test_web_view_in_headless_chromium(xray_video, exported_onnx, tmp_path):
    port = _free_port()
    command = [sys.executable, os.path.join(REPO, "classify.py"), xray_video, f"http://127.0.0.1:{port}",
               "--model", exported_onnx, "--input-loop", "-1", "-q"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), preexec_fn=ctrl_c_reaches_it,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.time() + 60, {}
        while time.time() < deadline and status.get("frames", 0) < 3:
            time.sleep(0.5)
            try:
                status = json.loads(urllib.request.urlopen(f"{base}/results.json", timeout=2).read())
            except OSError:
                continue
        assert status.get("frames", 0) >= 3, process.stderr.read() if process.poll() is not None else status
        assert status["latest"][0]["text"].endswith(("% NORMAL", "% PNEUMONIA"))
        with urllib.request.urlopen(f"{base}/stream.mjpg", timeout=5) as stream:
            assert "multipart/x-mixed-replace" in stream.headers["Content-Type"]
            head = stream.read(4096)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            body = head.split(b"\r\n\r\n", 1)[1] + stream.read(length)
            frame = cv2.imdecode(np.frombuffer(body[:length], np.uint8), cv2.IMREAD_COLOR)
            assert frame is not None and frame.shape == (256, 320, 3)
        os.makedirs(ARTIFACTS, exist_ok=True)
        screenshot = os.path.join(ARTIFACTS, "web_view.png")
        browser = browser_command(str(tmp_path / "profile"))
        subprocess.run(browser + ["--window-size=1000,700", "--timeout=4000", f"--screenshot={screenshot}", base + "/"],
                       capture_output=True, timeout=90, check=True)
        page = cv2.imread(screenshot)
        stream_area = page[10:266, 10:330]  # the <img> sits at the top left of the page
        assert stream_area.std() > 20, "the stream area of the page is blank"
        dom = rendered_dom(base + "/", str(tmp_path / "profile"))
        assert re.search(r"\d+ frames, \d+ positive, 0 skipped", dom), dom[-2000:]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _blob_image(rng: np.random.Generator, quadrant, size: int = 128) -> np.ndarray:
    """Textured background; positives carry one bright opacity centred in a known quadrant."""
    image = cv2.GaussianBlur(rng.normal(70, 25, (size, size)).astype(np.float32), (0, 0), 3)
    if quadrant is not None:
        cy = (0.25 if quadrant < 2 else 0.75) * size + rng.uniform(-0.08, 0.08) * size
        cx = (0.25 if quadrant % 2 == 0 else 0.75) * size + rng.uniform(-0.08, 0.08) * size
        yy, xx = np.mgrid[:size, :size]
        image += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.07 * size) ** 2))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory):
    """A ResNet-18 trained (128 px, 3 epochs) to find planted opacities; and held-out positives."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    held_out = []
    for split, count in (("train", 80), ("val", 16), ("test", 16)):
        for label in ("NORMAL", "PNEUMONIA"):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                quadrant = None if label == "NORMAL" else int(rng.integers(0, 4))
                path = root / split / label / f"{index:03d}.png"
                cv2.imwrite(str(path), _blob_image(rng, quadrant))
                if split == "test" and quadrant is not None:
                    held_out.append((str(path), quadrant))
    model_dir = str(root / "model")
    # The heatmap is under test, not the X-ray recipe: equalising a flat textured background spreads
    # its noise over the whole grey range, and 3 epochs of strong augmentation are too few for a blob.
    args = [str(root), "--model-dir", model_dir, "--resolution", "128", "--epochs", "3", "--batch-size", "16",
            "--no-pretrained", "--print-freq", "0", "--seed", "0", "--no-tensorboard", "--equalize", "none",
            "--augment", "light"]
    assert train_main(train_parser().parse_args(args)) == 0
    assert run_script("onnx_export.py", "--model-dir", model_dir).returncode == 0
    return model_dir, held_out


def test_heatmap_peak_falls_on_the_planted_opacity(blob_model, tmp_path):
    model_dir, held_out = blob_model
    model = DeployedModel(model_dir, "onnxruntime")
    assert model.backend.has_cam
    hits = 0
    for path, quadrant in held_out:
        probabilities, cams = model.run(load_for_network(path, model.spec)[None])
        evidence = evidence_map(cams[0], model.rule.positive, model.decide(probabilities[0]).class_index)
        row, column = np.unravel_index(np.argmax(evidence), evidence.shape)
        hits += (2 * int(row >= evidence.shape[0] / 2) + int(column >= evidence.shape[1] / 2)) == quadrant
    assert hits >= 0.8 * len(held_out), f"{hits} of {len(held_out)} peaks in the planted quadrant"
    # The same maps drawn by classify.py: colour appears only around the opacity's quadrant.
    path, quadrant = held_out[0]
    out = tmp_path / "heat.png"
    result = run_script("classify.py", path, str(out), "--model", model_dir, "--heatmap")
    assert result.returncode == 0, result.stderr
    drawn = cv2.imread(str(out)).astype(int)
    colour = np.abs(drawn[:, :, 2] - drawn[:, :, 0])  # red minus blue: zero on a grey picture
    half = drawn.shape[0] // 2
    quadrants = [colour[:half, :half], colour[:half, half:], colour[half:, :half], colour[half:, half:]]
    quadrants[0] = quadrants[0][half // 2:, :]  # ignore the label box at the top left
    assert int(np.argmax([q.mean() for q in quadrants])) == quadrant


def test_heatmap_needs_a_cam_output(exported_onnx, trained_model_dir, tmp_path, xray_video):
    plain = tmp_path / "plain"
    assert run_script("onnx_export.py", "--model-dir", trained_model_dir, "--no-cam",
                      "--output", str(plain / "resnet18.onnx")).returncode == 0
    result = run_script("classify.py", xray_video, "--model", str(plain), "--heatmap")
    assert result.returncode == 2 and "no class activation map output" in result.stderr


def test_results_file_is_written_row_by_row(xray_video, exported_onnx, tmp_path):
    results = tmp_path / "r.csv"
    result = run_script("classify.py", xray_video, "--model", exported_onnx, "--results", str(results), "-q")
    assert result.returncode == 0
    with open(results, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == FRAMES and all(row["ms_inference"] for row in rows)
