"""Import the chest X-ray download into data/pneumonia/{train,val,test}/<CLASS>/ with a patient-grouped split.

    python3 -m data.prepare chest_xray.zip                      # Kaggle archive (or Mendeley's)
    python3 -m data.prepare ~/Downloads/chest_xray --link copy  # an unpacked folder

What it does, in order:
1. finds the train/val/test layout (Kaggle or Mendeley, folder or zip);
2. hashes and test-decodes every file; unreadable, truncated, empty and non-image files are left out
   and listed in the report;
3. folds the official val split (16 images) into train: it is too small to choose a model on;
4. drops byte-identical copies inside train, and refuses images whose bytes appear under two classes;
5. checks the official test split against train for shared patients and identical images (leakage);
   the default is to stop and name them (``--test-overlap drop`` removes those patients from train,
   ``keep`` keeps them and records it);
6. holds out ``--val-fraction`` of the train *patients*, stratified by class, as the new val split;
7. writes the images (symlinks, hard links or copies), labels.txt, manifest.csv (path, split,
   class, patient, sha256, source) and prepare_report.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from typing import Dict, List, Sequence

from tqdm import tqdm

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.files import check_writable
from cxr_jetson.core.labels import write_labels
from cxr_jetson.core.names import LABELS_FILE
from cxr_jetson.data.inventory import ImageRecord, find_leaks, first_of_duplicates, inspect_all, label_conflicts
from cxr_jetson.data.layout import SPLITS, collect_records, locate_root
from cxr_jetson.data.source_tree import LINK_MODES, SourceTree
from cxr_jetson.data.synthetic import NOTICE_FILE

MANIFEST = "manifest.csv"
REPORT = "prepare_report.json"
TEST_OVERLAP_MODES = ("error", "drop", "keep")


class PrepareError(ToolkitError):
    """The import cannot go on; the message says what to change."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Import the Kaggle/Mendeley chest X-ray download into a patient-grouped train/val/test layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", help="the download: a folder or a .zip (Kaggle chest_xray or Mendeley ChestXRay2017)")
    parser.add_argument("-o", "--output", default=os.path.join("data", "pneumonia"), help="data set folder to create")
    parser.add_argument("--classes", default="NORMAL,PNEUMONIA", help="class folders to import, comma-separated")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of train patients (per class) held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    parser.add_argument("--link", choices=LINK_MODES, default="symlink",
                        help="how images are placed in the output (zip members are always copied)")
    parser.add_argument("--test-overlap", choices=TEST_OVERLAP_MODES, default="error",
                        help="what to do with train patients or images that also appear in the official test split")
    parser.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads that hash and test-decode images")
    parser.add_argument("--force", action="store_true", help="replace an output folder made by an earlier import")
    return parser


def _check_output(output: str, force: bool) -> None:
    if os.path.exists(output) and not os.path.isdir(output):
        raise PrepareError(f"{output} is a file; the output is a data set folder")
    # The new import is written beside the output, then swapped in: the parent must take new folders.
    check_writable(os.path.dirname(os.path.abspath(output)), "the folder that holds the output", is_folder=True)
    if not os.path.exists(output):
        return
    if not force:
        raise PrepareError(f"{output} already exists; pass --force to replace it")
    if os.listdir(output) and not os.path.isfile(os.path.join(output, MANIFEST)):
        raise PrepareError(f"{output} was not made by this tool (no {MANIFEST}); refusing to replace it")


def _exclude_duplicates_and_conflicts(records: List[ImageRecord]) -> None:
    for members in label_conflicts(records).values():
        labels = " and ".join(sorted({m.label for m in members}))
        for member in members:
            member.problem = f"the same image is filed as {labels}; its label cannot be trusted"
    for group in (("train", "val"), ("test",)):
        members = [r for r in records if r.usable and r.split in group]
        kept = first_of_duplicates(members)
        for record in members:
            first = kept[record.sha256]
            if first is not record:
                record.problem = f"byte-identical to {first.split}/{first.label}/{first.name}"


def _resolve_test_overlap(pool: List[ImageRecord], test: List[ImageRecord], mode: str) -> List[str]:
    """Apply ``--test-overlap`` to leaks between the train pool and the official test split."""
    leaks = find_leaks(pool + test)
    if not leaks:
        return []
    descriptions = [leak.describe() for leak in leaks]
    if mode == "error":
        shown = "; ".join(descriptions[:3])
        raise PrepareError(f"{len(leaks)} leak(s) between train and the official test split, e.g. {shown}. "
                           "Rerun with --test-overlap drop (remove them from train; test figures stay honest) "
                           "or --test-overlap keep (keep them, recorded in the report)")
    if mode == "drop":
        leaked_patients = {leak.key for leak in leaks if leak.kind == "patient"}
        leaked_hashes = {leak.key for leak in leaks if leak.kind == "image"}
        for record in pool:
            if record.patient in leaked_patients or record.sha256 in leaked_hashes:
                record.problem = "patient or image also in the official test split (--test-overlap drop)"
    return descriptions


def split_by_patient(records: Sequence[ImageRecord], fraction: float, seed: int) -> None:
    """Move ``fraction`` of the patients of each class to 'val'; a patient's images never straddle splits."""
    by_patient: Dict[str, List[ImageRecord]] = defaultdict(list)
    for record in records:
        by_patient[record.patient].append(record)
    strata: Dict[str, List[str]] = defaultdict(list)
    for patient, images in by_patient.items():
        # A patient with images in both classes (none in the official data) counts where most are.
        strata[Counter(r.label for r in images).most_common(1)[0][0]].append(patient)
    rng = random.Random(seed)  # noqa: S311 (a reproducible split, not a secret)
    for label in sorted(strata):
        patients = sorted(strata[label])
        rng.shuffle(patients)
        count = int(round(fraction * len(patients)))
        if fraction > 0 and len(patients) > 1:
            count = min(max(count, 1), len(patients) - 1)
        for patient in patients[:count]:
            for record in by_patient[patient]:
                record.split = "val"


def _write(tree: SourceTree, records: Sequence[ImageRecord], output: str, link: str, classes: Sequence[str]) -> str:
    """Write the layout into a fresh temporary folder beside ``output``; returns its path."""
    staging = f"{output}.partial"
    if os.path.exists(staging):
        shutil.rmtree(staging)
    for split in SPLITS:
        for label in classes:
            os.makedirs(os.path.join(staging, split, label))
    taken = set()
    for record in tqdm(records, desc=f"writing ({link if tree.kind == 'folder' else 'copy'})", unit="img",
                       disable=None):
        stem, extension = os.path.splitext(record.name)
        relpath, suffix = f"{record.split}/{record.label}/{record.name}", 2
        while relpath in taken:  # same file name in the official train and val folders
            relpath, suffix = f"{record.split}/{record.label}/{stem}-{suffix}{extension}", suffix + 1
        taken.add(relpath)
        record.name = os.path.basename(relpath)
        try:
            tree.materialize(record.source, os.path.join(staging, relpath), link)
        except OSError as err:
            raise PrepareError(f"cannot {link} {record.source}: {err.strerror or err}"
                               + ("; try --link copy" if link != "copy" else "")) from None
    write_labels(os.path.join(staging, LABELS_FILE), list(classes))
    with open(os.path.join(staging, MANIFEST), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "class", "patient", "sha256", "source"])
        for record in records:
            writer.writerow([f"{record.split}/{record.label}/{record.name}", record.split, record.label,
                             record.patient, record.sha256, tree.describe(record.source)])
    return staging


def _counts(records: Sequence[ImageRecord]) -> Dict[str, Dict[str, Dict[str, int]]]:
    table: Dict[str, Dict[str, Dict[str, int]]] = {}
    for split in SPLITS:
        members = [r for r in records if r.split == split]
        labels = sorted({r.label for r in members})
        table[split] = {
            "images": {label: sum(r.label == label for r in members) for label in labels},
            "patients": {label: len({r.patient for r in members if r.label == label}) for label in labels},
        }
    return table


def _print_summary(report: dict) -> None:
    print(f"source: {report['source']} ({report['source_kind']}), layout at '{report['root'] or '.'}'")
    official = report["official_counts"]
    print("official split: " + ", ".join(f"{s} {sum(official.get(s, {}).values())}" for s in SPLITS)
          + f"; official val ({report['official_val_folded']} images) folded into train")
    if report["excluded"]:
        print(f"left out {len(report['excluded'])} file(s):")
        for entry in report["excluded"][:10]:
            print(f"  {entry['file']}: {entry['reason']}")
        if len(report["excluded"]) > 10:
            print(f"  ... see {REPORT}")
    for leak in report["test_overlap"]["leaks"][:5]:
        print(f"test overlap ({report['test_overlap']['mode']}): {leak}")
    print(f"{'split':6} {'class':10} {'images':>7} {'patients':>9}")
    for split, table in report["counts"].items():
        for label, images in table["images"].items():
            print(f"{split:6} {label:10} {images:7d} {table['patients'][label]:9d}")
    print(f"written to {report['output']} (manifest: {MANIFEST}, report: {REPORT})")


def _output_folder(source: str, output: str) -> str:
    """One spelling of the output whatever the user typed ("data/x/" is "data/x"): the new import is
    written beside it, never inside it; neither folder may hold the other."""
    real_source, real_output = os.path.realpath(source), os.path.realpath(output)
    if real_source == real_output or real_source.startswith(real_output + os.sep):
        raise PrepareError(f"the source {source} is inside the output {output}, which an import replaces")
    if real_output.startswith(real_source + os.sep):
        raise PrepareError(f"the output {output} is inside the source {source}: the next import "
                           "would read this one's files back as new ones")
    return os.path.normpath(output)


def _swap_in(staging: str, output: str) -> None:
    """The complete new import takes the output's place; the previous one goes only once it has."""
    previous = f"{output}.previous"
    if os.path.exists(previous):
        shutil.rmtree(previous)
    if os.path.exists(output):
        os.replace(output, previous)
    try:
        os.replace(staging, output)
    except OSError as err:
        if os.path.exists(previous):
            os.replace(previous, output)
        raise PrepareError(f"cannot put the new import in place at {output}: {err.strerror or err}; "
                           "the previous one is unchanged") from None
    if os.path.exists(previous):
        shutil.rmtree(previous)


def prepare(args: argparse.Namespace) -> dict:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise PrepareError("--classes needs at least two class names")
    if not 0.0 <= args.val_fraction < 1.0:
        raise PrepareError(f"--val-fraction {args.val_fraction} must be in [0, 1)")
    output = _output_folder(args.source, args.output)
    _check_output(output, args.force)
    tree = SourceTree(args.source)
    try:
        files = tree.files()
        root, other_roots = locate_root(files, classes)
        records, ignored = collect_records(files, root, classes)
        official = {s: dict(Counter(r.label for r in records if r.split == s)) for s in SPLITS}
        records = inspect_all(records, tree.read, args.workers)
        _exclude_duplicates_and_conflicts(records)
        folded = sum(1 for r in records if r.usable and r.split == "val")
        pool = [r for r in records if r.usable and r.split in ("train", "val")]
        for record in pool:
            record.split = "train"
        test = [r for r in records if r.usable and r.split == "test"]
        overlap = _resolve_test_overlap(pool, test, args.test_overlap)
        pool = [r for r in pool if r.usable]
        if not pool:
            raise PrepareError("no usable training images were found")
        split_by_patient(pool, args.val_fraction, args.seed)
        kept = pool + test
        if args.test_overlap != "keep":
            leaks = find_leaks(kept)
            if leaks:  # cannot happen after the steps above; a guard against regressions
                raise PrepareError(f"internal error: leakage after splitting: {leaks[0].describe()}")
        staging = _write(tree, kept, output, args.link, classes)
        # A synthetic download stays labelled as such in the data set (and on models trained on it).
        synthetic = [f for f in files if os.path.basename(f) == NOTICE_FILE]
        if synthetic:
            with open(os.path.join(staging, NOTICE_FILE), "wb") as handle:
                handle.write(tree.read(synthetic[0]))
    finally:
        tree.close()
    report = {
        "source": os.path.abspath(args.source), "source_kind": tree.kind, "root": root,
        "other_layouts_ignored": other_roots, "output": output, "classes": classes,
        "val_fraction": args.val_fraction, "seed": args.seed, "link": args.link,
        "official_counts": official, "official_val_folded": folded,
        "counts": _counts(kept),
        "excluded": [{"file": r.source, "reason": r.problem} for r in records if not r.usable],
        "ignored_files": ignored,
        "test_overlap": {"mode": args.test_overlap, "leaks": overlap}, "synthetic": bool(synthetic),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with open(os.path.join(staging, REPORT), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    _swap_in(staging, output)
    return report


def main(args: argparse.Namespace) -> int:
    _print_summary(prepare(args))
    return 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "data.prepare")


if __name__ == "__main__":
    cli()
