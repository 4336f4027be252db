"""The bad-input corpus: every command fed what users really feed it, made here at test time.

Each case asserts the exit status, a one-line message naming the problem, no traceback, and for
batch work that every good input was still processed and recorded. Commands run as their own
processes (tests/forked_cli.py), from the same entry points as the scripts.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from cxr_jetson.data.synthetic import generate, synthetic_xray
from tests import bad_files
from tests.conftest import REPO, train_args
from tests.forked_cli import Finished, ctrl_c_reaches_it, run_forked

UNWRITABLE = "/proc/cxr-jetson-test"  # the kernel refuses new files here, even to root
GOOD = ("a.png", "b.jpg")
PYTHON_TRACEBACK = "Traceback (most recent call last)"


def expect(result: Finished, status: int, *words: str) -> str:
    """The run ended with ``status``, no traceback, and one line of its stderr names every one of ``words``."""
    assert not result.timed_out, "the command hung"
    assert PYTHON_TRACEBACK not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == status, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    if not words:
        return ""
    lines = [line for line in (result.stderr + result.stdout).splitlines() if all(w in line for w in words)]
    assert lines, f"no line names {words}:\n{result.stderr[-3000:]}"
    return lines[0]


def digest(folder) -> dict:
    """Every file under ``folder`` and its hash: to show that nothing a user owns was touched."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path):
                found[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def rows(path) -> dict:
    with open(path, newline="") as handle:
        return {os.path.basename(row["path"]): row for row in csv.DictReader(handle)}


def good_folder(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    bad_files.good_xray(os.path.join(folder, GOOD[0]), 1)
    bad_files.good_xray(os.path.join(folder, GOOD[1]), 2, positive=True)
    return str(folder)


@pytest.fixture()
def classify(exported_onnx, tmp_path):
    def run(*argv: str, timeout: float = 120) -> Finished:
        return run_forked("classify.py", *argv, "--model", exported_onnx, "-q", tmp_dir=str(tmp_path), timeout=timeout)
    return run


# ----------------------------------------------------------------------------------------------------
# classify.py: one bad item in a folder of good ones
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(bad_files.BAD_IMAGES))
def test_folder_goes_on_past_a_bad_image_and_reports_it(case, classify, tmp_path):
    maker, name, words = bad_files.BAD_IMAGES[case]
    folder = good_folder(tmp_path / "in")
    maker(os.path.join(folder, name))
    before = digest(folder)
    result = classify(folder, str(tmp_path / "out"), "--max-pixels", "100000000")
    line = expect(result, 1, "failed:", name, words)
    assert line.count("\n") == 0 and len(line) < 400
    recorded = rows(tmp_path / "out" / "results.csv")
    assert {r for r in recorded if recorded[r]["status"] == "ok"} == set(GOOD)  # the good ones, and only they
    assert recorded[name]["status"] == "error" and recorded[name]["label"] == ""  # no answer for what was not read
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.jpg", "results.csv"]
    assert digest(folder) == before


SPECIAL_ENTRIES = {"named pipe": (bad_files.named_pipe, "a named pipe"),
                   "broken link": (bad_files.dangling_link, "a broken or looping link"),
                   "link to itself": (bad_files.link_loop, "a broken or looping link")}


@pytest.mark.parametrize("case", sorted(SPECIAL_ENTRIES))
def test_entries_named_like_images_that_are_not_files_are_passed_over(case, classify, tmp_path):
    maker, kind = SPECIAL_ENTRIES[case]
    folder = good_folder(tmp_path / "in")
    maker(os.path.join(folder, "x.jpg"))
    result = classify(folder, str(tmp_path / "out"), timeout=60)  # a pipe read would block forever
    expect(result, 0, "skipped:", "x.jpg", kind)
    assert set(rows(tmp_path / "out" / "results.csv")) == set(GOOD)


def test_folder_named_like_an_image_is_walked_not_read(classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    good_folder(os.path.join(folder, "series.jpg"))
    result = classify(folder, str(tmp_path / "out"))
    expect(result, 0)
    with open(tmp_path / "out" / "results.csv", newline="") as handle:
        recorded = sorted(os.path.relpath(row["path"], folder) for row in csv.DictReader(handle))
    assert recorded == ["a.png", "b.jpg", "series.jpg/a.png", "series.jpg/b.jpg"]
    assert os.path.isfile(tmp_path / "out" / "series.jpg" / "a.png")


def test_dicom_with_an_unusable_window_is_shown_over_its_own_range_with_a_warning(classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    bad_files.dicom_zero_window(os.path.join(folder, "window0.dcm"))
    result = classify(folder, str(tmp_path / "out"))
    expect(result, 0, "warning:", "window0.dcm", "Window Width", "own pixel range")
    assert rows(tmp_path / "out" / "results.csv")["window0.dcm"]["status"] == "ok"


def test_decompression_bomb_is_refused_from_its_header_with_bounded_memory(classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    bad_files.png_bomb(os.path.join(folder, "bomb.png"), side=30000)  # 900 MB of pixels in < 1 MB
    assert os.path.getsize(os.path.join(folder, "bomb.png")) < 1_000_000
    result = classify(folder, str(tmp_path / "out"))
    expect(result, 1, "bomb.png", "30000 x 30000", "--max-pixels")
    assert result.peak_rss_growth_mb < 300, result.peak_rss_growth_mb


def test_max_pixels_lets_a_real_large_image_through_and_refuses_it_below(classify, tmp_path):
    big = str(tmp_path / "big.png")
    cv2.imwrite(big, cv2.resize(synthetic_xray(np.random.default_rng(0), True, 400, 400), (2400, 2000)))
    expect(classify(big, "--max-pixels", "4000000"), 1, "big.png", "2400 x 2000", "--max-pixels")
    expect(classify(big), 0)


# ----------------------------------------------------------------------------------------------------
# classify.py: outputs, collisions, labels, models, arguments
# ----------------------------------------------------------------------------------------------------

def test_output_folder_equal_to_the_input_folder_is_refused_and_nothing_written(classify, tmp_path):
    folder = good_folder(tmp_path / "scans")
    before = digest(folder)
    expect(classify(folder, folder), 2, "would write over the input")
    expect(classify(folder, folder + "/"), 2, "would write over the input")
    assert digest(folder) == before


def test_output_file_equal_to_the_input_file_is_refused(classify, tmp_path):
    image = os.path.join(good_folder(tmp_path / "scans"), "a.png")
    before = digest(tmp_path / "scans")
    expect(classify(image, image), 2, "would write over the input", "a.png")
    assert digest(tmp_path / "scans") == before


def test_results_file_naming_an_input_is_refused(classify, tmp_path):
    folder = good_folder(tmp_path / "scans")
    before = digest(folder)
    expect(classify(folder, "--results", os.path.join(folder, "a.png")), 2, "would write over the input")
    assert digest(folder) == before


def test_output_folder_inside_the_input_is_never_read_back(classify, tmp_path):
    folder = good_folder(tmp_path / "scans")
    for _ in range(2):  # the second run must not classify the first run's annotated copies
        expect(classify(folder, os.path.join(folder, "annotated")), 0)
        assert set(rows(os.path.join(folder, "annotated", "results.csv"))) == set(GOOD)


def test_inputs_with_the_same_stem_get_unique_outputs(classify, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = synthetic_xray(np.random.default_rng(3), False, 128, 128)
    for name in ("scan.png", "scan.webp", "scan.jpg"):
        cv2.imwrite(str(folder / name), image)
    out = tmp_path / "out"
    expect(classify(str(folder), str(out), "--output-size", "full"), 0)
    written = sorted(os.listdir(out))
    assert len(written) == 4 and "results.csv" in written, written  # three images, three files


def test_output_pattern_never_replaces_an_input(classify, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(2):
        bad_files.good_xray(str(folder / f"out_{index:04d}.jpg"), index)
    before = digest(folder)
    expect(classify(str(folder), str(folder / "out_%04d.jpg")), 2, "would write over the input")
    assert digest(folder) == before


@pytest.mark.parametrize("where, words", [
    (f"{UNWRITABLE}/out", ("cannot write", UNWRITABLE)),
    ("FILE", ("is a file, not a folder",)),
])
def test_unwritable_output_folder_is_refused_before_any_work(where, words, classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    if where == "FILE":
        where = str(tmp_path / "taken")
        open(where, "w").write("mine\n")
    expect(classify(folder, where + "/"), 2, *words)


@pytest.mark.parametrize("results, words", [
    (f"{UNWRITABLE}/results.csv", ("cannot write results file",)),
    ("/proc/version", ("cannot write results file",)),
    ("DIR", ("is a folder, not a file",)),
])
def test_unwritable_results_file_is_refused_before_any_work(results, words, classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    if results == "DIR":
        results = str(tmp_path)
    result = classify(folder, str(tmp_path / "out"), "--results", results)
    expect(result, 2, *words)
    assert not os.path.exists(tmp_path / "out" / "a.png")  # refused before the first image


def _labels_file(tmp_path, *names: str) -> str:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(names) + "\n")
    return str(path)


@pytest.mark.parametrize("names, words", [
    (("PNEUMONIA", "NORMAL"), ("--relabel", "['PNEUMONIA', 'NORMAL']")),
    (("normal", "pneumonia"), ("--relabel", "['normal', 'pneumonia']")),
    (("healthy", "sick"), ("--relabel", "['healthy', 'sick']")),
    (("NORMAL", "PNEUMONIA", "COVID"), ("lists 3 classes", "outputs 2")),
    (("NORMAL",), ("lists 1 class but", "outputs 2")),
])
def test_labels_that_are_not_the_models_own_are_refused(names, words, classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    expect(classify(folder, "--labels", _labels_file(tmp_path, *names)), 2, "labels.txt", *words)


def test_relabel_renames_the_classes_and_keeps_the_decision(classify, tmp_path):
    folder = good_folder(tmp_path / "in")
    expect(classify(folder, str(tmp_path / "own")), 0)
    result = classify(folder, str(tmp_path / "renamed"), "--labels", _labels_file(tmp_path, "healthy", "sick"),
                      "--relabel")
    expect(result, 0, "warning:", "--relabel", "healthy")
    own, renamed = rows(tmp_path / "own" / "results.csv"), rows(tmp_path / "renamed" / "results.csv")
    for name in GOOD:
        assert renamed[name]["class_index"] == own[name]["class_index"]
        assert renamed[name]["p_sick"] == own[name]["p_PNEUMONIA"]


def test_model_answering_logits_is_wrapped_with_a_warning(exported_onnx, tmp_path):
    logits = bad_files.model_without_softmax(exported_onnx, str(tmp_path / "logits.onnx"), scale=1000.0)
    folder = good_folder(tmp_path / "in")
    result = run_forked("classify.py", folder, str(tmp_path / "out"), "--model", logits, "-q", tmp_dir=str(tmp_path))
    expect(result, 0, "warning:", "not probabilities", "softmax is applied")
    for row in rows(tmp_path / "out" / "results.csv").values():
        p = float(row["p_NORMAL"]), float(row["p_PNEUMONIA"])
        assert all(0 <= v <= 1 for v in p) and abs(sum(p) - 1) < 1e-4


def test_model_whose_outputs_are_not_a_distribution_is_refused(exported_onnx, tmp_path):
    """Values inside 0..1 that do not sum to 1: small logits or a multi-label (sigmoid) model; no guess."""
    ambiguous = bad_files.model_without_softmax(exported_onnx, str(tmp_path / "ambiguous.onnx"), scale=1e-4)
    result = run_forked("classify.py", good_folder(tmp_path / "in"), "--model", ambiguous, tmp_dir=str(tmp_path))
    expect(result, 2, "ambiguous.onnx", "not softmax probabilities")


@pytest.mark.parametrize("model, words", [
    ("MISSING", ("not found",)),
    ("JUNK", ("cannot load", "junk.onnx")),
    ("EMPTY", ("junk.onnx",)),
])
def test_unreadable_models_are_one_line_errors(model, words, tmp_path):
    folder = good_folder(tmp_path / "in")
    path = str(tmp_path / ("none.onnx" if model == "MISSING" else "junk.onnx"))
    if model == "JUNK":
        open(path, "wb").write(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif model == "EMPTY":
        open(path, "wb").close()
    expect(run_forked("classify.py", folder, "--model", path, tmp_dir=str(tmp_path)), 2, *words)


@pytest.mark.parametrize("arguments, words", [
    (("--threshold", "1.5"), ("--threshold 1.5",)),
    (("--max-pixels", "0"), ("--max-pixels",)),
    (("--topK", "0"), ("--topK",)),
    (("--batch-size", "0"), ("--batch-size",)),
    (("--input-blob", "data"), ("--input_blob=data", "input_0")),
    (("--output-blob", "prob"), ("--output_blob=prob", "output_0")),
])
def test_bad_arguments_are_one_line_errors(arguments, words, classify, tmp_path):
    expect(classify(good_folder(tmp_path / "in"), *arguments), 2, *words)


@pytest.mark.parametrize("source, words", [
    ("MISSING", ("does not exist",)),
    ("PIPE", ("a named pipe",)),
    ("EMPTY_FOLDER", ("contains no images",)),
    ("BROKEN_VIDEO", ("broken.mp4",)),
    ("/dev/video97", ("/dev/video97",)),
])
def test_bad_inputs_are_one_line_errors(source, words, classify, tmp_path):
    if source == "MISSING":
        source = str(tmp_path / "nothing.png")
    elif source == "PIPE":
        source = str(tmp_path / "x.jpg")
        os.mkfifo(source)
    elif source == "EMPTY_FOLDER":
        source = str(tmp_path / "empty")
        os.mkdir(source)
    elif source == "BROKEN_VIDEO":
        source = str(tmp_path / "broken.mp4")
        bad_files.random_bytes(source)
    expect(classify(source, timeout=60), 2, *words)


def _folder_of(count: int, folder) -> str:
    os.makedirs(folder)
    for index in range(count):
        bad_files.good_xray(os.path.join(folder, f"{index:04d}.png"), index, side=96)
    return str(folder)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_stopping_a_folder_run_keeps_every_result_so_far(sig, status, exported_onnx, tmp_path):
    folder = _folder_of(3000, tmp_path / "in")  # enough that the run cannot end before the signal arrives
    out = tmp_path / "out"
    command = [sys.executable, os.path.join(REPO, "classify.py"), folder, str(out), "--model", exported_onnx]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1"),
                               preexec_fn=ctrl_c_reaches_it,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    for line in process.stdout:
        if line.startswith("classify:"):
            printed.append(line)
            if len(printed) == 20:
                break
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == status and PYTHON_TRACEBACK not in stderr, stderr
    recorded = rows(out / "results.csv")
    assert 20 <= len(recorded) < 3000
    assert all(row["status"] == "ok" for row in recorded.values())
    if sig == signal.SIGINT:
        assert "stopped by Ctrl+C" in stdout and f"classified {len(recorded)} image(s)" in stdout


# ----------------------------------------------------------------------------------------------------
# data.prepare
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def download(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("download"))
    generate(folder, {"train": 12, "val": 2, "test": 4}, seed=0, max_side=200)
    return folder


def prepare(*argv: str, tmp_path) -> Finished:
    return run_forked("data.prepare", *argv, tmp_dir=str(tmp_path))


def test_bad_files_in_a_download_are_left_out_and_listed(download, tmp_path):
    source = tmp_path / "download"
    shutil.copytree(download, source)
    normal = source / "chest_xray" / "train" / "NORMAL"
    for maker, name in ((bad_files.lying_jpeg, "IM-9001-0001.jpeg"), (bad_files.one_pixel, "IM-9002-0001.jpeg"),
                        (bad_files.named_pipe, "IM-9003-0001.jpeg"), (bad_files.dicom_zero_window, "IM-9004-0001.dcm")):
        maker(str(normal / name))
    result = prepare(str(source), "-o", str(tmp_path / "data"), tmp_path=tmp_path)
    expect(result, 0)
    report = open(tmp_path / "data" / "prepare_report.json").read()
    for name in ("IM-9001-0001.jpeg", "IM-9002-0001.jpeg"):
        assert name in report  # listed with its reason, not imported as a flat grey image
    manifest = open(tmp_path / "data" / "manifest.csv").read()
    assert "IM-9001-0001" not in manifest and "IM-9002-0001" not in manifest and "IM-9003-0001" not in manifest


def test_failed_forced_import_keeps_the_previous_one_whatever_the_spelling(download, tmp_path):
    output = tmp_path / "data"
    expect(prepare(download, "-o", str(output), tmp_path=tmp_path), 0)
    before = digest(output)
    broken = tmp_path / "broken"
    (broken / "chest_xray" / "train").mkdir(parents=True)  # a layout with no class folders: the import fails
    for spelling in (str(output) + "/", str(output) + "//", str(output) + "/."):
        expect(prepare(str(broken), "-o", spelling, "--force", tmp_path=tmp_path), 2)
        assert digest(output) == before
    assert sorted(os.listdir(tmp_path)) == sorted(set(os.listdir(tmp_path)) - {"data.previous"})


def test_forced_import_with_a_trailing_slash_replaces_the_previous_one(download, tmp_path):
    output = tmp_path / "data"
    expect(prepare(download, "-o", str(output), tmp_path=tmp_path), 0)
    expect(prepare(download, "-o", str(output) + "/", "--force", "--seed", "1", tmp_path=tmp_path), 0)
    assert '"seed": 1' in open(output / "prepare_report.json").read()
    assert [name for name in os.listdir(tmp_path) if name.startswith("data")] == ["data"]


def test_zip_member_with_a_bad_crc_is_left_out_and_listed(download, tmp_path):
    result = prepare(bad_files.zip_with_bad_crc(download, str(tmp_path / "download.zip")), "-o", str(tmp_path / "data"),
                     tmp_path=tmp_path)
    line = expect(result, 0, "damaged in the archive", "Bad CRC-32")
    assert os.path.basename(line.split(":")[0].strip()) in open(tmp_path / "data" / "prepare_report.json").read()


@pytest.mark.parametrize("case, words", [
    ("missing source", ("does not exist",)),
    ("random bytes .zip", ("zip",)),
    ("no class folders", ("chest_xray",)),
    ("output inside the source", ("inside",)),
    ("source inside the output", ("is inside the output",)),
    ("output is a file", ("is a file",)),
    ("output unwritable", ("cannot write", UNWRITABLE)),
    ("output exists", ("--force",)),
    ("foreign output with --force", ("not made by this tool",)),
])
def test_bad_imports_are_one_line_errors(case, words, download, tmp_path):
    output, extra = str(tmp_path / "data"), []
    source = download
    if case == "missing source":
        source = str(tmp_path / "nothing")
    elif case == "random bytes .zip":
        source = str(tmp_path / "download.zip")
        bad_files.random_bytes(source)
    elif case == "no class folders":
        source = str(tmp_path / "chest_xray")
        os.makedirs(os.path.join(source, "train"))
    elif case == "output inside the source":
        source = str(tmp_path / "download")
        shutil.copytree(download, source)
        output = os.path.join(source, "chest_xray", "train", "imported")
    elif case == "source inside the output":
        source = str(tmp_path / "data" / "download")
        shutil.copytree(download, source)
        extra = ["--force"]
    elif case == "output is a file":
        open(output, "w").write("mine\n")
    elif case == "output unwritable":
        output = f"{UNWRITABLE}/data"
    elif case == "output exists":
        os.makedirs(output)
        open(os.path.join(output, "keep.txt"), "w").write("mine\n")
    elif case == "foreign output with --force":
        os.makedirs(output)
        open(os.path.join(output, "keep.txt"), "w").write("mine\n")
        extra = ["--force"]
    before = digest(tmp_path)
    expect(prepare(source, "-o", output, *extra, tmp_path=tmp_path), 2, *words)
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith(".std")} == \
           {k: v for k, v in before.items() if not k.startswith(".std")}


# ----------------------------------------------------------------------------------------------------
# train.py
# ----------------------------------------------------------------------------------------------------

def train(*argv: str, tmp_path) -> Finished:
    return run_forked("train.py", *argv, tmp_dir=str(tmp_path), timeout=600)


def test_training_set_with_bad_files_trains_on_the_rest_and_names_them(prepared_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data, symlinks=False)
    normal = data / "train" / "NORMAL"
    for maker, name in ((bad_files.lying_jpeg, "liar.jpeg"), (bad_files.png_bomb, "bomb.png"),
                        (bad_files.one_pixel, "dot.png"), (bad_files.named_pipe, "pipe.jpeg"),
                        (bad_files.truncated_jpeg, "half.jpeg")):
        maker(str(normal / name))
    bad_files.dicom_zero_window(str(normal / "window0.dcm"))
    result = train(*train_args(str(data), str(tmp_path / "model"), "--epochs", "1"), tmp_path=tmp_path)
    expect(result, 0)
    for name in ("liar.jpeg", "bomb.png", "dot.png", "half.jpeg"):
        assert name in result.stdout + result.stderr, f"{name} not reported"
    assert os.path.isfile(tmp_path / "model" / "model_best.pth.tar")


def test_fresh_run_over_a_trained_model_is_refused_and_overwrite_replaces_it(prepared_data, trained_model_dir,
                                                                              tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model_dir, model_dir)
    before = digest(model_dir)
    result = train(*train_args(prepared_data, str(model_dir), "--epochs", "1"), tmp_path=tmp_path)
    expect(result, 2, "already holds a trained model", "--resume", "--overwrite")
    assert digest(model_dir) == before
    expect(train(*train_args(prepared_data, str(model_dir), "--epochs", "1", "--overwrite"), tmp_path=tmp_path), 0)
    assert digest(model_dir)["model_best.pth.tar"] != before["model_best.pth.tar"]


@pytest.mark.parametrize("case, words", [
    ("model dir is a file", ("is a file, not a folder",)),
    ("model dir unwritable", ("cannot write", UNWRITABLE)),
    ("data folder missing", ("does not exist",)),
    ("data folder without train", ("train",)),
    ("resume from nothing", ("nothing",)),
    ("resume from random bytes", ("checkpoint",)),
    ("resume from a pickle that runs code", ("refus",)),
    ("epochs 0", ("--epochs",)),
    ("batch size 0", ("--batch-size",)),
    ("multi-label", ("--multi-label",)),
])
def test_bad_training_runs_are_one_line_errors(case, words, prepared_data, tmp_path):
    data, model_dir, extra = prepared_data, str(tmp_path / "model"), []
    marker = tmp_path / "ran"
    if case == "model dir is a file":
        open(model_dir, "w").write("mine\n")
    elif case == "model dir unwritable":
        model_dir = f"{UNWRITABLE}/model"
    elif case == "data folder missing":
        data = str(tmp_path / "nothing")
    elif case == "data folder without train":
        data = str(tmp_path / "empty")
        os.makedirs(data)
    elif case == "resume from nothing":
        extra = ["--resume", str(tmp_path / "nothing.pth.tar")]
    elif case == "resume from random bytes":
        bad_files.random_bytes(str(tmp_path / "junk.pth.tar"))
        extra = ["--resume", str(tmp_path / "junk.pth.tar")]
    elif case == "resume from a pickle that runs code":
        torch.save({"arch": "resnet18", "payload": _RunsCode(str(marker))}, str(tmp_path / "evil.pth.tar"))
        extra = ["--resume", str(tmp_path / "evil.pth.tar")]
    elif case == "epochs 0":
        extra = ["--epochs", "0"]
    elif case == "batch size 0":
        extra = ["--batch-size", "0"]
    elif case == "multi-label":
        extra = ["--multi-label"]
    argv = train_args(data, model_dir, "--epochs", "1")
    expect(train(*argv, *extra, tmp_path=tmp_path), 2, *words)
    assert not marker.exists()


class _RunsCode:
    """Unpickling this runs a command: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ----------------------------------------------------------------------------------------------------
# onnx_export.py and trt_build.py
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, words", [
    ("output unwritable", ("cannot write --output", UNWRITABLE)),
    ("output is a folder", ("is a folder, not a file",)),
    ("model dir missing", ("nothing",)),
    ("no checkpoint", ("checkpoint",)),
    ("checkpoint of random bytes", ("checkpoint",)),
    ("checkpoint that runs code", ("refus",)),
    ("no activation", ("--no-activation",)),
])
def test_bad_exports_are_one_line_errors(case, words, trained_model_dir, tmp_path):
    model_dir, extra = tmp_path / "model", []
    marker = tmp_path / "ran"
    shutil.copytree(trained_model_dir, model_dir)
    if case == "output unwritable":
        extra = ["--output", f"{UNWRITABLE}/resnet18.onnx"]
    elif case == "output is a folder":
        extra = ["--output", str(tmp_path)]
    elif case == "model dir missing":
        model_dir = tmp_path / "nothing"
    elif case == "no checkpoint":
        for name in os.listdir(model_dir):
            if name.endswith(".pth.tar"):
                os.remove(model_dir / name)
    elif case == "checkpoint of random bytes":
        bad_files.random_bytes(str(model_dir / "model_best.pth.tar"))
    elif case == "checkpoint that runs code":
        torch.save({"arch": "resnet18", "payload": _RunsCode(str(marker))}, str(model_dir / "model_best.pth.tar"))
    elif case == "no activation":
        extra = ["--no-activation"]
    result = run_forked("onnx_export.py", "--model-dir", str(model_dir), *extra, tmp_dir=str(tmp_path), timeout=300)
    expect(result, 2, *words)
    assert not marker.exists()


@pytest.mark.parametrize("case, words", [
    ("onnx missing", ("not found",)),
    ("onnx of random bytes", ("not an ONNX model",)),
    ("engine path is a folder", ("is a folder, not a file",)),
    ("max batch 0", ("--max-batch",)),
])
def test_bad_engine_builds_are_one_line_errors(case, words, exported_onnx, tmp_path):
    model, extra = str(tmp_path / "resnet18.onnx"), []
    shutil.copy(exported_onnx, model)
    if case == "onnx missing":
        model = str(tmp_path / "none.onnx")
    elif case == "onnx of random bytes":
        bad_files.random_bytes(model)
    elif case == "engine path is a folder":
        os.makedirs(tmp_path / "resnet18.fp16.b1.engine")
    elif case == "max batch 0":
        extra = ["--max-batch", "0"]
    result = run_forked("trt_build.py", "--onnx", model, "--compute-capability", "SM86", *extra,
                        tmp_dir=str(tmp_path), timeout=300)
    expect(result, 2, *words)
    assert not os.path.isfile(tmp_path / "resnet18.fp16.b1.engine")
