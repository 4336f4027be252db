"""The toolkit runs on JetPack 5's Python 3.8: no newer syntax or standard-library API anywhere."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

CODE = ["cxr_jetson", "core", "networks", "data", "edge", "train", "export", "bench", "classify.py", "train.py", "onnx_export.py", "trt_build.py"]


def test_code_needs_no_python_newer_than_3_8():
    vermin = shutil.which("vermin", path=os.path.dirname(sys.executable)) or shutil.which("vermin")
    assert vermin, "vermin (a dev dependency) is not installed"
    result = subprocess.run([vermin, "--no-tips", "--violations", "--eval-annotations", "-t=3.8-", *CODE],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
