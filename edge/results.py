"""A results file written row by row and flushed, so a killed run keeps what it classified."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional

from cxr_jetson.core.errors import ToolkitError

_FORMATS = (".csv", ".jsonl")


class ResultsWriter:
    def __init__(self, path: Optional[str], fields: List[str]) -> None:
        self.path = path
        self.fields = fields
        self._handle = None
        self._csv = None
        if not path:
            return
        extension = os.path.splitext(path)[1].lower()
        if extension not in _FORMATS:
            raise ToolkitError(f"results file {path} must end in {' or '.join(_FORMATS)}")
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._handle = open(path, "w", newline="", encoding="utf-8")
        except OSError as err:
            raise ToolkitError(f"cannot write results file {path}: {err.strerror or err}") from None
        if extension == ".csv":
            self._csv = csv.DictWriter(self._handle, fieldnames=fields, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: Dict[str, Any]) -> None:
        if self._handle is None:
            return
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self._handle.write(json.dumps({k: row.get(k) for k in self.fields}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
