"""Where one training step of the default recipe goes on this machine: augmentation, forward, backward and the
optimizer step timed apart, and with ``--profile`` the operators by time, the convolutions by layer shape.

    python3 -m bench.train_step [--batch-size 32] [--steps 8] [--profile]

The step is train.py's with its defaults: the network train.py builds, the default batch augmentation and
equalisation from uint8 images at the training resolution, the autocast dtype and memory format train.py
picks on this device, its optimizer, and the host memory setting it uses on a CPU. The images are random:
what a step costs does not depend on what they show. Each phase is the median over ``--steps`` steps after
two warm-up steps. ``--profile`` (CPU) runs three more steps under torch.profiler and lists the operators by their own
time: the convolutions (forward and backward, where most of a ResNet step goes) per input shape, and the
costliest others (batch norm, pooling, the augmentation's sampling).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Dict, List

import torch
from torch import nn

from bench.machine import describe
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.networks.model import build_model
from cxr_jetson.train.args import DEFAULTS
from cxr_jetson.train.augment import AUGMENTATIONS
from cxr_jetson.train.config import preprocessing, resolve
from cxr_jetson.train.hardware import grad_scaler, keep_freed_memory, select_amp, select_device
from cxr_jetson.train.loop import StepSettings, training_step
from cxr_jetson.train.optim import Schedule, make_optimizer
from cxr_jetson.train.state import TrainingRun

PHASES = ("augment", "forward", "backward", "optimizer")
CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward")


class DefaultStep:
    """train.py's default training step (train/loop.py training_step) on random images, each phase timed apart."""

    def __init__(self, batch_size: int, device: torch.device) -> None:
        torch.manual_seed(0)
        # the defaults as a one-process run resolves them (learning rate, resolution of the architecture)
        self.config = resolve(dataclasses.replace(DEFAULTS, batch_size=batch_size), 1, None, drawn_seed=0)
        self.device, amp_dtype = device, select_amp(self.config.amp, device)
        self.spec = preprocessing(self.config, None)
        # untrained weights: what a step costs does not depend on them
        self.model = build_model(self.config.arch, 2, head_dropout=self.config.head_dropout).to(device)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(self.config, [{"params": self.model.parameters()}])
        self.run = TrainingRun(model=self.model, criterion=nn.CrossEntropyLoss(), optimizer=optimizer,
                               scheduler=Schedule(self.config, optimizer, steps_per_epoch=1000),
                               scaler=grad_scaler(device, amp_dtype), generator=torch.Generator().manual_seed(0),
                               best={})
        self.settings = StepSettings(self.spec, AUGMENTATIONS[self.config.augment], device, batch_size, amp_dtype,
                                     self.config.channels_last, print_freq=0, mixup=self.config.mixup)
        side = self.config.resolution
        self.images = torch.randint(0, 256, (batch_size, side, side), dtype=torch.uint8, device=device)
        self.targets = torch.randint(0, 2, (batch_size,), device=device)

    def _mark(self, marks: List[float]) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # a GPU phase ends when its kernels do, not when they are queued
        marks.append(time.perf_counter())

    def __call__(self) -> Dict[str, float]:
        """One step; milliseconds per phase."""
        marks: List[float] = []
        self._mark(marks)
        self.model.train()
        training_step(self.model, self.run, self.images, self.targets, self.settings, lambda: self._mark(marks))
        return {phase: (end - start) * 1000.0 for phase, start, end in zip(PHASES, marks, marks[1:])}


def time_phases(step: DefaultStep, steps: int) -> Dict[str, float]:
    """Median milliseconds of each phase and of the whole step over ``steps`` steps, after two warm-up steps
    (the first ones allocate and pick kernels)."""
    for _ in range(2):
        step()
    timings: List[Dict[str, float]] = [step() for _ in range(steps)]
    medians = {phase: statistics.median(timing[phase] for timing in timings) for phase in PHASES}
    medians["step"] = statistics.median(sum(timing.values()) for timing in timings)
    return medians


def profiled_operators(step: DefaultStep, steps: int = 3, others: int = 8) -> List[Dict]:
    """The operators of ``steps`` profiled steps by their own time: every convolution (forward and backward)
    per input shape, and the ``others`` costliest other operators; milliseconds and calls per step, the
    costliest first."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(steps):
            step()

    def row(event, shapes: List) -> Dict:
        return {"operator": event.key, "ms_per_step": event.self_cpu_time_total / 1000.0 / steps,
                "calls_per_step": event.count / steps, "input_shapes": shapes}

    convolutions = [row(event, [shape for shape in event.input_shapes if shape])
                    for event in profiler.key_averages(group_by_input_shape=True) if event.key in CONVOLUTIONS]
    rest = sorted((row(event, []) for event in profiler.key_averages() if event.key not in CONVOLUTIONS),
                  key=lambda entry: -entry["ms_per_step"])[:others]
    return sorted(convolutions + rest, key=lambda entry: -entry["ms_per_step"])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time the phases of train.py's default training step on this "
                                                 "machine; --profile lists the operators by time.")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (the median is reported)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--profile", action="store_true",
                        help="also list the operators by time, the convolutions by shape")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 2 or args.steps < 1:
        raise ToolkitError("--batch-size must be at least 2 (batch norm) and --steps at least 1")
    device = select_device(args.device)
    if args.profile and device.type != "cpu":
        raise ToolkitError("--profile lists the CPU's operators; run it with --device cpu")
    if device.type == "cpu":
        keep_freed_memory()
    step = DefaultStep(args.batch_size, device)
    medians = time_phases(step, args.steps)
    print(f"{describe()}, torch {torch.__version__}, {torch.get_num_threads()} threads; device {device}, "
          f"autocast {step.settings.amp_dtype}, channels_last {step.config.channels_last}, batch {args.batch_size}")
    print("median ms per step: " + ", ".join(f"{phase} {medians[phase]:.0f}" for phase in (*PHASES, "step"))
          + f"  ({args.batch_size * 1000.0 / medians['step']:.1f} images/s)")
    if args.profile:
        print(f"\n{'ms/step':>8}{'calls':>6}  operator and input shapes")
        for row in profiled_operators(step):
            shapes = f" {row['input_shapes'][:3]}" if row["input_shapes"] else ""
            print(f"{row['ms_per_step']:>8.1f}{row['calls_per_step']:>6.0f}  {row['operator']}{shapes}")
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.train_step")
