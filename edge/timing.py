"""Per-stage timing, printed like jetson-inference's Timing Report (``classify.py --profile``)."""
from __future__ import annotations

import time
from typing import Dict, List

STAGES = ("decode", "preprocess", "inference", "postprocess", "overlay", "encode")


class StageClock:
    """Mean milliseconds per frame for each stage, and the wall-clock rate of the whole run."""

    def __init__(self) -> None:
        self.totals: Dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self.start = time.perf_counter()

    def add(self, timings: Dict[str, float]) -> None:
        self.frames += 1
        for stage, milliseconds in timings.items():
            self.totals[stage] = self.totals.get(stage, 0.0) + milliseconds

    def mean(self, stage: str) -> float:
        return self.totals[stage] / self.frames if self.frames else 0.0

    def report(self) -> List[str]:
        wall = time.perf_counter() - self.start
        lines = [f"Timing Report ({self.frames} frames; stages run in parallel threads, so the slowest stage, "
                 "not the sum, sets the rate)"]
        for stage in STAGES:
            mean = self.mean(stage)
            fps = f"{1000 / mean:8.1f} FPS" if mean > 0 else "       - FPS"
            lines.append(f"  {stage:<12} {mean:8.2f} ms  {fps}")
        lines.append(f"  {'sum':<12} {sum(self.mean(s) for s in STAGES):8.2f} ms")
        rate = self.frames / wall if wall > 0 else 0.0
        lines.append(f"  {'end to end':<12} {1000 / rate if rate else 0:8.2f} ms  {rate:8.1f} FPS  ({wall:.2f} s wall)")
        return lines
