"""Class label files in jetson-inference format: one class per line, in class-index order."""
from __future__ import annotations

import re
from typing import List

from cxr_jetson.core.errors import ToolkitError

# jetson-inference splits "n01440764 tench" into a synset and a description; plain lines are labels.
_SYNSET_LINE = re.compile(r"^n\d{8} (.+)$")


class LabelsError(ToolkitError, ValueError):
    """A labels file that cannot be used with the model."""


def read_labels(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except OSError as err:
        raise LabelsError(f"cannot read labels file {path}: {err.strerror or err}") from None
    labels = []
    for line in lines:
        if not line:
            continue
        match = _SYNSET_LINE.match(line)
        labels.append(match.group(1) if match else line)
    if not labels:
        raise LabelsError(f"labels file {path} has no class names")
    return labels


def write_labels(path: str, labels: List[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{label}\n" for label in labels))


def check_label_count(labels: List[str], num_outputs: int, source: str) -> None:
    if len(labels) != num_outputs:
        classes = "1 class" if len(labels) == 1 else f"{len(labels)} classes"
        raise LabelsError(f"{source} lists {classes} but the model outputs {num_outputs}; "
                          "use the labels.txt written beside the model")
