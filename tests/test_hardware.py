"""train/hardware.py: the host allocator keeps what a training step frees for the next step."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Training steps of ResNet-18 in a fresh process; ru_minflt counts the pages the kernel had to map (and
# zero) for it. Kept memory is mapped once, in the first steps, and then reused.
_STEPS = """
import json, resource, sys
import torch
from cxr_jetson.networks.model import build_model
from cxr_jetson.train.hardware import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
model = build_model("resnet18", 2)
images, targets = torch.rand(8, 3, 224, 224), torch.tensor([0, 1] * 4)
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.nn.functional.cross_entropy(model(images), targets).backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _page_faults(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_training_step_reuses_the_memory_the_last_one_freed():
    default, kept = _page_faults("default"), _page_faults("keep")
    assert kept["applied"] and not default["applied"]
    # glibc's default maps the large activations afresh every step: thousands of pages, step after step
    settled = min(default["faults"][2:])
    assert settled > 1000
    # kept: the memory is mapped in the first steps and then reused
    assert kept["faults"][-1] < settled / 10
