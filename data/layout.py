"""Find the ``{train,val,test}/<CLASS>/`` layout inside a download and list its images.

The Kaggle archive nests a second full copy (``chest_xray/chest_xray/``) and macOS ``__MACOSX``
folders; the Mendeley archive (``ChestXRay2017`` / ``CellData``) has no val split, and its CellData
version carries an OCT data set beside the X-rays. The layout holding the requested classes at the
shallowest depth is the one taken; the others are reported.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence, Set, Tuple

from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.data.inventory import ImageRecord

SPLITS = ("train", "val", "test")


class LayoutError(ToolkitError):
    """A download without a recognisable train/<CLASS>/ layout."""


def _depth(prefix: str) -> int:
    return prefix.count("/") + 1 if prefix else 0


def locate_root(files: Sequence[str], classes: Sequence[str]) -> Tuple[str, List[str]]:
    """The prefix of the folder that holds ``train/<CLASS>/`` for every class, and other such folders."""
    found: Dict[str, Set[str]] = defaultdict(set)
    for path in files:
        parts = path.split("/")
        for index, part in enumerate(parts[:-2]):
            if part.lower() == "train":
                found["/".join(parts[:index])].add(parts[index + 1].upper())
    wanted = {c.upper() for c in classes}
    roots = sorted((p for p, seen in found.items() if wanted <= seen), key=lambda p: (_depth(p), p))
    if not roots:
        raise LayoutError(f"no train/{{{','.join(classes)}}}/ folders found; expected the Kaggle or Mendeley "
                          "chest_xray layout (train/, optionally val/ and test/, one folder per class)")
    return roots[0], roots[1:]


def collect_records(files: Sequence[str], root: str, classes: Sequence[str]) -> Tuple[List[ImageRecord], List[str]]:
    """Images under ``root/<split>/<CLASS>/`` (any depth below), and files that fit no split/class."""
    canonical = {c.upper(): c for c in classes}
    prefix = f"{root}/" if root else ""
    records, ignored = [], []
    for path in files:
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        split = parts[0].lower()
        if split not in SPLITS:
            continue
        if len(parts) < 3 or parts[1].upper() not in canonical:
            ignored.append(path)
            continue
        records.append(ImageRecord(source=path, split=split, label=canonical[parts[1].upper()], name=parts[-1]))
    return records, ignored
