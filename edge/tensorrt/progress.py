"""Build progress: TensorRT 10+'s IProgressMonitor as one live status line (or phase lines off a
terminal), and elapsed time for TensorRT 8.x builds, which have no progress callback."""
from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional

from tqdm import tqdm

from cxr_jetson.edge.tensorrt.api import TensorRT


def progress_monitor(trt: TensorRT):
    """TensorRT 10+'s IProgressMonitor, shown as one live status line (or phase lines off a terminal)."""

    class BuildProgress(trt.module.IProgressMonitor):
        def __init__(self) -> None:
            trt.module.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()
            self.phases: Dict[str, List] = {}
            self.status = tqdm(bar_format="{desc}", disable=None, leave=False)

        def _depth(self, name: Optional[str]) -> int:
            depth = 0
            while name in self.phases:
                name, depth = self.phases[name][0], depth + 1
            return depth

        def _show(self) -> None:
            path = " > ".join(f"{name} [{done}/{steps}]" for name, (_, steps, done) in self.phases.items())
            self.status.set_description_str(f"building {time.perf_counter() - self.start:5.1f} s: {path}")

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            self.phases[phase_name] = [parent_phase, num_steps, 0]
            depth = self._depth(parent_phase)
            if self.status.disable and depth <= 1:  # off a terminal: the two outer levels, one line each
                print(f"  {time.perf_counter() - self.start:6.1f} s  {'  ' * depth}{phase_name}", flush=True)
            self._show()

        def step_complete(self, phase_name, step) -> bool:
            if phase_name in self.phases:
                self.phases[phase_name][2] = step + 1
            self._show()
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            self.phases.pop(phase_name, None)
            self._show()

    return BuildProgress()


class Spinner:
    """Elapsed time while a TensorRT 8.x build runs (it has no progress callback)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        with tqdm(bar_format="{desc}", disable=None, leave=False) as status:
            while not self.done.wait(0.5):
                status.set_description_str(f"building engine: {time.perf_counter() - start:5.1f} s")

    def __enter__(self) -> "Spinner":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
