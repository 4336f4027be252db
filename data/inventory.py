"""Inventory of a data set's images: who the patient is, what the bytes hash to, whether they decode.

Used by the import (data.prepare) and by the standalone check (data.check), so both admit exactly the
images that training and the device runner can read.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from cxr_jetson.core.decode import ImageDecodeError, decode_grey
from cxr_jetson.data.patients import patient_id

# Validation decodes at a reduced scale: every compressed byte is still read, so truncation and
# corruption are caught, at a fraction of the cost of a full decode.
_VALIDATION_MIN_SIDE = 256


@dataclass
class ImageRecord:
    source: str          # path inside the source tree
    split: str           # train / val / test as found in the source, later as written
    label: str
    name: str            # file name
    patient: str = ""
    sha256: str = ""
    problem: str = ""    # why the image is left out; empty when it is kept

    @property
    def usable(self) -> bool:
        return not self.problem


def _inspect(record: ImageRecord, read) -> ImageRecord:
    try:
        data = read(record.source)
    except (OSError, KeyError) as err:
        record.problem = f"unreadable: {err}"
        return record
    record.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        record.problem = "empty file (0 bytes)"
        return record
    try:
        decode_grey(data, record.name, _VALIDATION_MIN_SIDE)
    except ImageDecodeError as err:
        record.problem = str(err)
    return record


def inspect_all(records: Sequence[ImageRecord], read, workers: int = 4,
                description: str = "checking images") -> List[ImageRecord]:
    """Hash and test-decode every record in parallel (OpenCV and hashlib release the GIL)."""
    for record in records:
        known = patient_id(record.name)
        # An unrecognised name is its own patient: it can only ever leak with itself.
        record.patient = known or f"file:{record.name}"
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(tqdm(pool.map(lambda r: _inspect(r, read), records), total=len(records),
                            desc=description, unit="img", disable=None))
    return results


@dataclass(frozen=True)
class Leak:
    kind: str                 # "patient" or "image" (byte-identical)
    key: str                  # patient id or sha256
    members: tuple            # (split, label, name) of every image involved

    def describe(self) -> str:
        where = ", ".join(f"{split}/{label}/{name}" for split, label, name in self.members[:6])
        more = f" (+{len(self.members) - 6} more)" if len(self.members) > 6 else ""
        what = f"patient {self.key}" if self.kind == "patient" else f"identical image {self.key[:12]}"
        return f"{what} in {', '.join(sorted({m[0] for m in self.members}))}: {where}{more}"


def _group_leaks(records: Iterable[ImageRecord], kind: str, key_of) -> List[Leak]:
    groups: Dict[str, List[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[key_of(record)].append(record)
    leaks = []
    for key, members in sorted(groups.items()):
        if len({m.split for m in members}) > 1:
            leaks.append(Leak(kind, key, tuple((m.split, m.label, m.name) for m in members)))
    return leaks


def find_leaks(records: Iterable[ImageRecord]) -> List[Leak]:
    """Patients and byte-identical images that appear in more than one split."""
    usable = [r for r in records if r.usable]
    return (_group_leaks(usable, "patient", lambda r: r.patient)
            + _group_leaks(usable, "image", lambda r: r.sha256))


def label_conflicts(records: Iterable[ImageRecord]) -> Dict[str, List[ImageRecord]]:
    """Byte-identical images filed under different classes: their label cannot be trusted."""
    groups: Dict[str, List[ImageRecord]] = defaultdict(list)
    for record in records:
        if record.usable:
            groups[record.sha256].append(record)
    return {sha: members for sha, members in groups.items() if len({m.label for m in members}) > 1}


def first_of_duplicates(records: Iterable[ImageRecord]) -> Dict[str, Optional[ImageRecord]]:
    """sha256 -> the first usable record with those bytes (the copy that is kept)."""
    first: Dict[str, Optional[ImageRecord]] = {}
    for record in records:
        if record.usable and record.sha256 not in first:
            first[record.sha256] = record
    return first
