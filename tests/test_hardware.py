"""train/hardware.py: the host allocator keeps what a training step frees for the next step."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

BLOCK = 64 * 2 ** 20  # larger than the biggest block glibc ever serves from its heap by default (32 MiB)

# A step's pattern, through the C allocator every tensor's memory comes from: a large block allocated,
# written, freed, again. ru_minflt counts the pages the kernel had to map (and zero) for the process.
_STEPS = f"""
import ctypes, json, resource, sys
from cxr_jetson.train.hardware import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc({BLOCK})
    libc.memset(block, 1, {BLOCK})
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": faults}}))
"""


def _page_faults(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_block_is_kept_for_the_next_step_instead_of_being_mapped_again():
    default, kept = _page_faults("default"), _page_faults("keep")
    assert kept["applied"] and not default["applied"]
    pages = BLOCK // 4096
    # glibc's default: every step maps (and the kernel zero-fills) the whole block again
    assert min(default["faults"]) > pages * 0.9
    # kept: the first step maps it, the later ones reuse it
    assert kept["faults"][0] > pages * 0.9 and max(kept["faults"][1:]) < pages * 0.01
