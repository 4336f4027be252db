"""Importing a download: layout discovery, bad files, patient-grouped split, leakage, manifest."""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict

import pytest

from cxr_jetson.data.patients import patient_id
from cxr_jetson.data.prepare import PrepareError, get_args_parser, prepare
from tests.conftest import run_script


def _prepare(source: str, output: str, *extra: str) -> dict:
    return prepare(get_args_parser().parse_args([source, "--output", output, *extra]))


def _manifest(folder: str) -> list:
    with open(os.path.join(folder, "manifest.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def download(synthetic_download, tmp_path) -> str:
    """A private copy of the synthetic download that a test may damage."""
    copy = str(tmp_path / "download")
    shutil.copytree(synthetic_download, copy)
    return copy


@pytest.mark.parametrize("name, patient", [
    ("person123_bacteria_456.jpeg", "person123"),
    ("person123_virus_457.jpeg", "person123"),
    ("person447_virus_921_1.jpeg", "person447"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0115-0001-0002.jpeg", "IM-0115"),
    ("NORMAL2-IM-0381-0001.jpeg", "NORMAL2-IM-0381"),
    ("scan_from_elsewhere.png", None),
])
def test_patient_ids_follow_the_official_names(name, patient):
    assert patient_id(name) == patient


def test_import_builds_a_patient_grouped_stratified_split(prepared_data):
    rows = _manifest(prepared_data)
    splits_of_patient = defaultdict(set)
    for row in rows:
        splits_of_patient[row["patient"]].add(row["split"])
        assert os.path.isfile(os.path.join(prepared_data, row["path"]))
        assert len(row["sha256"]) == 64
    assert all(len(splits) == 1 for splits in splits_of_patient.values())
    for label in ("NORMAL", "PNEUMONIA"):  # stratified: both classes in val
        assert any(r["split"] == "val" and r["class"] == label for r in rows)
    with open(os.path.join(prepared_data, "labels.txt")) as handle:
        assert handle.read().split() == ["NORMAL", "PNEUMONIA"]
    report = json.load(open(os.path.join(prepared_data, "prepare_report.json")))
    assert report["official_val_folded"] == 4 and report["excluded"] == []
    total = sum(sum(t["images"].values()) for t in report["counts"].values())
    assert total == len(rows) == 2 * sum((16, 2, 4))


def test_bad_files_are_reported_and_left_out(download, tmp_path):
    normal = os.path.join(download, "chest_xray", "train", "NORMAL")
    good = sorted(os.listdir(normal))[0]
    data = open(os.path.join(normal, good), "rb").read()
    bad = {"IM-9001-0001.jpeg": b"", "IM-9002-0001.jpeg": data[: len(data) // 2],
           "IM-9003-0001.jpeg": b"plain text, not an image", "notes.txt": b"radiologist notes"}
    for name, content in bad.items():
        open(os.path.join(normal, name), "wb").write(content)
    report = _prepare(download, str(tmp_path / "out"))
    reasons = {os.path.basename(e["file"]): e["reason"] for e in report["excluded"]}
    assert set(reasons) == set(bad)
    assert "empty" in reasons["IM-9001-0001.jpeg"] and "truncated" in reasons["IM-9002-0001.jpeg"]
    written = {row["path"].split("/")[-1] for row in _manifest(str(tmp_path / "out"))}
    assert not written & set(bad) and good in written


def test_zip_with_nested_copy_and_macos_folders(download, tmp_path):
    # The Kaggle archive holds chest_xray/ twice (once nested) plus __MACOSX resource forks.
    nested = os.path.join(download, "chest_xray", "chest_xray")
    shutil.copytree(os.path.join(download, "chest_xray", "train"), os.path.join(nested, "train"))
    os.makedirs(os.path.join(download, "__MACOSX", "chest_xray", "train", "NORMAL"))
    open(os.path.join(download, "__MACOSX", "chest_xray", "train", "NORMAL", "._x.jpeg"), "wb").write(b"\0")
    archive = shutil.make_archive(str(tmp_path / "archive"), "zip", download)
    report = _prepare(archive, str(tmp_path / "out"), "--link", "symlink")
    assert report["source_kind"] == "zip" and report["root"] == "chest_xray"
    assert report["other_layouts_ignored"] == ["chest_xray/chest_xray"]
    assert not any(os.path.islink(os.path.join(tmp_path, "out", r["path"])) for r in _manifest(str(tmp_path / "out")))


def _copy_train_image_into_test(download: str, new_name: str) -> str:
    train = os.path.join(download, "chest_xray", "train", "PNEUMONIA")
    name = sorted(os.listdir(train))[0]
    shutil.copy(os.path.join(train, name), os.path.join(download, "chest_xray", "test", "PNEUMONIA", new_name))
    return name


def test_identical_image_in_train_and_test_is_an_error_naming_it(download, tmp_path):
    name = _copy_train_image_into_test(download, "person99999_virus_1.jpeg")
    with pytest.raises(PrepareError, match="leak") as error:
        _prepare(download, str(tmp_path / "out"))
    assert name in str(error.value) and "--test-overlap" in str(error.value)
    assert not os.path.exists(tmp_path / "out")


def test_patient_in_train_and_test_can_be_dropped_from_train(download, tmp_path):
    name = _copy_train_image_into_test(download, "ignored.jpeg")
    patient = patient_id(name)
    test_dir = os.path.join(download, "chest_xray", "test", "PNEUMONIA")
    os.remove(os.path.join(test_dir, "ignored.jpeg"))
    # A different image of the same patient in test: a patient leak, not a byte leak.
    other = sorted(os.listdir(test_dir))[0]
    os.rename(os.path.join(test_dir, other), os.path.join(test_dir, f"{patient}_virus_77777.jpeg"))
    with pytest.raises(PrepareError, match=f"patient {patient}"):
        _prepare(download, str(tmp_path / "out"))
    report = _prepare(download, str(tmp_path / "dropped"), "--test-overlap", "drop")
    rows = _manifest(str(tmp_path / "dropped"))
    assert {r["split"] for r in rows if r["patient"] == patient} == {"test"}
    assert any("official test split" in e["reason"] for e in report["excluded"])
    kept = _prepare(download, str(tmp_path / "kept"), "--test-overlap", "keep")
    assert kept["test_overlap"]["leaks"] and kept["test_overlap"]["mode"] == "keep"


def test_existing_output_needs_force_and_foreign_folders_are_never_replaced(download, tmp_path):
    output = str(tmp_path / "out")
    _prepare(download, output)
    with pytest.raises(PrepareError, match="--force"):
        _prepare(download, output)
    _prepare(download, output, "--force")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(PrepareError, match="not made by this tool"):
        _prepare(download, str(foreign), "--force")
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_check_command_finds_leaks_in_an_existing_layout(prepared_data, tmp_path):
    copy = str(tmp_path / "data")
    shutil.copytree(prepared_data, copy)
    clean = run_script("-m", "data.check", copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    train = os.path.join(copy, "train", "NORMAL")
    name = sorted(os.listdir(train))[0]
    shutil.copy(os.path.join(train, name), os.path.join(copy, "val", "NORMAL", name))
    leaky = run_script("-m", "data.check", copy)
    assert leaky.returncode == 1 and name in leaky.stdout and "leak" in leaky.stdout


def test_missing_source_is_a_one_line_error(tmp_path):
    result = run_script("-m", "data.prepare", str(tmp_path / "nowhere.zip"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_mendeley_layout_without_val_beside_another_data_set(download, tmp_path):
    # Mendeley's CellData archive: chest_xray/{train,test} (no val) next to an OCT data set.
    cell = tmp_path / "mendeley" / "CellData"
    shutil.copytree(os.path.join(download, "chest_xray", "train"), cell / "chest_xray" / "train")
    shutil.copytree(os.path.join(download, "chest_xray", "test"), cell / "chest_xray" / "test")
    for name in ("CNV", "DME"):
        (cell / "OCT" / "train" / name).mkdir(parents=True)
        shutil.copy(os.path.join(download, "chest_xray", "train", "NORMAL", "NORMAL2-IM-0001-0001.jpeg"),
                    cell / "OCT" / "train" / name / "CNV-1-1.jpeg")
    report = _prepare(str(tmp_path / "mendeley"), str(tmp_path / "out"))
    assert report["root"] == "CellData/chest_xray" and report["official_val_folded"] == 0
    assert report["counts"]["val"]["images"] and report["counts"]["test"]["images"] == {"NORMAL": 4, "PNEUMONIA": 4}
