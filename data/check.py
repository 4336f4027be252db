"""Check a data set in the standard layout for unreadable images and leakage between splits.

    python3 -m data.check data/pneumonia

Exits 1 when an image cannot be decoded or a patient or identical image appears in two splits.
"""
from __future__ import annotations

import argparse
import os

from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.labels import read_labels
from cxr_jetson.core.names import LABELS_FILE
from cxr_jetson.data.inventory import find_leaks, inspect_all
from cxr_jetson.data.layout import collect_records
from cxr_jetson.data.source_tree import SourceTree

EXIT_PROBLEMS = 1


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check a {train,val,test}/<CLASS>/ data set for bad images and leakage.")
    parser.add_argument("data", help="data set folder, e.g. data/pneumonia")
    parser.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    return parser


def main(args: argparse.Namespace) -> int:
    labels_file = os.path.join(args.data, LABELS_FILE)
    tree = SourceTree(args.data)
    files = tree.files()
    classes = (read_labels(labels_file) if os.path.isfile(labels_file)
               else sorted({path.split("/")[1] for path in files if path.count("/") >= 2}))
    records, ignored = collect_records(files, "", classes)
    records = inspect_all(records, tree.read, args.workers)
    bad = [r for r in records if not r.usable]
    leaks = find_leaks(records)
    for record in bad:
        print(f"bad image: {record.split}/{record.label}/{record.name}: {record.problem}")
    for leak in leaks:
        print(f"leak: {leak.describe()}")
    for path in ignored:
        print(f"ignored (not in a class folder): {path}")
    print(f"{len(records)} images checked: {len(bad)} bad, {len(leaks)} leak(s)")
    return EXIT_PROBLEMS if bad or leaks else 0


def cli() -> None:
    run_cli(lambda: main(get_args_parser().parse_args()), "data.check")


if __name__ == "__main__":
    cli()
