"""The decoders under hypothesis (tests/fuzz_decoders.py): thousands of cases, no traceback, bounded memory.

The fuzzing runs in a child process under an address-space limit, so a decode that tried to allocate
what a lying header claims would fail the run instead of swapping the machine.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

from tests.conftest import REPO
from tests.forked_cli import peak_memory, with_peak_memory

CASES_PER_STRATEGY = 1000  # four strategies
ADDRESS_SPACE_LIMIT = 4 << 30  # a 60000 x 60000 claim decoded would need 3.6 GB for its pixels alone


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def test_decoders_refuse_or_decode_every_fuzzed_input_in_bounded_memory(tmp_path):
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # Through a small go-between that reports its child's peak: a child forked straight from this test
        # process would start its peak resident size from this process's, which a long test run makes large.
        process = subprocess.Popen(with_peak_memory([sys.executable, "-m", "tests.fuzz_decoders", str(CASES_PER_STRATEGY)]),
                                   cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=stdout, stderr=stderr,
                                   preexec_fn=_limit_address_space)
        process.wait()
    log = err.read_text()
    lines = out.read_text().splitlines()
    status, peak_kib = peak_memory(lines[-1])
    assert process.returncode == 0 and status == 0 and "Traceback" not in log, log[-4000:]
    report = json.loads(lines[-2])
    assert report["cases"] == 4 * CASES_PER_STRATEGY
    assert report["outcomes"]["random bytes: refused"] == CASES_PER_STRATEGY
    assert peak_kib < (1 << 20), f"peak resident memory {peak_kib / 1024:.0f} MiB"  # KiB: under 1 GiB
    print(f"fuzzed {report['cases']} inputs, peak memory {peak_kib / 1024:.0f} MiB: {report['outcomes']}")
