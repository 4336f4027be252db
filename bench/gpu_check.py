"""One prepared GPU check for the short lease of an x86 GPU test machine (H100/H200, torch, no TensorRT).

Here, once, make the data set travel as real files (see "The data" below):

    bash bench/gpu_check.sh --stage      # data/pneumonia's train and val images -> data/gpu_check (35 MiB)

then one call of the device tool (``$OUT`` is its output folder there; ``gpu_check_out`` without it):

    run(command="bash bench/gpu_check.sh", carry=["data/gpu_check"], timeout_s=540)

and hand the machine back at once (the check uses about 8 of the lease's 15 minutes: there is no time
to run it twice). A rehearsal on a 2-core CPU takes about two minutes (the test runs a smaller one):

    python3 -m bench.gpu_check --smoke --device cpu --epochs 1 --out /tmp/gpu_check

Each step runs in its own process under its own time limit, its output streamed to the console and to
``gpu_check.log`` as it comes (a run cut short still shows how far it got); a step that fails, times out
or cannot run here is recorded with its status, rc and one line why, and the next step still runs
(``--skip`` leaves steps out; the exit status is 1 when a step failed or timed out, else 0):

1. ``environment``: Python, torch, CUDA and the GPU, ONNX Runtime's providers, which of the toolkit's
   dependencies import, and that the checkout's ``cxr_jetson`` imports without being installed
   (``cxr_jetson/__init__.py`` maps the top-level folders in; the steps get the checkout on PYTHONPATH).
2. ``train_recipes``: ``bench/train_recipes.py``, train.py's full default recipe and jetson-inference's
   recipe in one process on the same GPU, 224 px, the ``IM-*`` normal series held out, both scored on
   validation and the shift proxies. **12 epochs each**, not 35: jetson-inference's recipe takes about
   6 s an epoch on an H200 (DESIGN.md: 6-7 s for 5,216 images; 4,121 train + 488 val here), ours about
   1-2 s an epoch plus about 2 minutes once (decoding the cache, the input gate fitted on the host CPU,
   calibration, scoring both recipes on 7 splits): about 3.5 minutes in all, inside the step's 270 s.
   The whole-run ratio counts ours' one-off costs against 12 epochs; the median-epoch ratio and a
   projection to 35 epochs (each run plus 23 more median epochs) are printed beside it.
3. ``onnx_export`` of our model (gpu_latency's parity part needs the ONNX), then ``gpu_latency``:
   batch-1 and batch-64 latency of the torch back-end (FP16, CUDA graph) against eager FP32, and its
   FP16 parity with ONNX Runtime FP32 on the validation images. Needs CUDA: skipped without it.
4. ``benchmark``: ``benchmark.py`` over the validation images, every back-end and precision that runs
   there; recorded as not present where the checkout has no benchmark.py.

Time: 465 s in all, sized to 8 minutes of the lease (the machine's start and the transfers aside); each
step is capped (STEPS) and also stopped at the overall deadline. The summary (training seconds and
ratios, accuracy per split, latency and its ratio) is printed and written to ``gpu_check.json``, which
is rewritten after every step. ``--out`` receives 7 files (gpu_check.json and .log, train_recipes.json
and .png, gpu_latency.json, benchmark.json and .png), within the 8 the device tool brings back; the
trained model stays in a scratch folder (its checkpoints and ONNX exceed the tool's 16 MiB a file).

The data: ``data/pneumonia`` as data.prepare makes it by default holds symbolic links into
../shared/datasets, and the device tool carries a link only as a link, so naming data/pneumonia in
``carry`` sends dangling links. ``--stage`` copies the images themselves to data/gpu_check (git-ignored
by ``data/*/``); ``--data`` defaults to the first of data/gpu_check and data/pneumonia whose images open.

The GPU machine's image, as listed for it, has torch, torchvision, onnx, onnxruntime (CPU provider),
OpenCV, scikit-learn, scipy, matplotlib, tqdm, tensorboard and timm; it lacks pydicom (DICOM input
only: no step reads DICOM), TensorRT and pycuda (benchmark.py is expected to go without TensorRT). A
step whose imports are missing is skipped with the module named, rather than started to crash.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import signal
import subprocess  # noqa: S404 (runs this repository's own scripts, argument lists only)
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from bench.gpu_check_data import DATA_CANDIDATES, REPO, SMOKE_PER_CLASS, STAGED, choose_data, smoke_subset, stage
from bench.gpu_check_summary import _load_json, print_summary, summarise
from cxr_jetson.core.cli import run_cli
from cxr_jetson.core.errors import ToolkitError
from cxr_jetson.core.names import BEST_CHECKPOINT

TOTAL_BUDGET_S = 465
MIN_STEP_S = 10                     # a step given less than this would only time out
DEFAULT_EPOCHS = 12
SMOKE_RESOLUTION = 64
SMOKE_RUNS = 5                      # timed runs per latency figure: the 200-300 of a real run take minutes on a CPU
# What the steps write to --out; files of an earlier run are removed first, so the summary is this run's.
OUTPUT_FILES = ("gpu_check.json", "gpu_check.log", "train_recipes.json", "train_recipes.png", "gpu_latency.json",
                "benchmark.json", "benchmark.png")
# What the environment step tries to import: the toolkit's dependencies, required and optional.
PROBED = ("numpy", "cv2", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "sklearn", "scipy",
          "matplotlib", "tqdm", "tensorboard", "timm", "pydicom", "tensorrt", "cuda.bindings", "pycuda")
TRAIN_NEEDS = ("torch", "torchvision", "sklearn", "matplotlib", "tqdm", "cv2")
EXPORT_NEEDS = ("torch", "onnx", "onnxruntime", "cv2")
OPTIONAL_USE = {"onnxscript": "torch's dynamo exporter; onnx_export.py uses the TorchScript one",
                "scipy": "scikit-learn's own dependency", "tensorboard": "train.py's scalars; it trains without",
                "timm": "--arch xception only", "pydicom": "DICOM input only; no step here reads DICOM",
                "tensorrt": "the TensorRT back-end; benchmark.py goes without it",
                "cuda.bindings": "the TensorRT back-end's CUDA calls", "pycuda": "the TensorRT back-end's CUDA calls"}


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int
    needs: Sequence[str] = ()       # modules the step imports: missing ones skip it
    needs_cuda: bool = False


STEPS = (Step("environment", 60), Step("train_recipes", 270, TRAIN_NEEDS), Step("onnx_export", 60, EXPORT_NEEDS),
         Step("gpu_latency", 90, EXPORT_NEEDS, needs_cuda=True), Step("benchmark", 90, ("cv2",)))


def _console(log: TextIO) -> Callable[[str], None]:
    """print() to the terminal and to the log at once, flushed, so a run cut short shows how far it got."""
    def echo(text: str = "") -> None:
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()
    return echo


def probe_environment() -> Dict[str, object]:
    """What this machine has, for the environment step (run in a child: an import may crash it)."""
    modules = {}
    for name in PROBED:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # any import failure means the same here: that module is unusable
            modules[name] = {"ok": False, "error": (f"{type(err).__name__}: {err}".splitlines() or [""])[0][:200]}
        else:
            modules[name] = {"ok": True, "version": str(getattr(module, "__version__", ""))}
    found = {"python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(),
             "cpus": os.cpu_count(), "modules": modules}
    import cxr_jetson.core.preprocess as preprocess  # the checkout's mapping of its folders
    found["cxr_jetson"] = os.path.dirname(os.path.dirname(os.path.abspath(preprocess.__file__)))
    if modules["onnxruntime"]["ok"]:
        found["onnxruntime_providers"] = importlib.import_module("onnxruntime").get_available_providers()
    if modules["torch"]["ok"]:
        found.update(_torch_facts())
    return found


def _torch_facts() -> Dict[str, object]:
    import torch
    facts: Dict[str, object] = {"torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if facts["cuda_available"]:
        properties = torch.cuda.get_device_properties(0)
        facts.update(gpu=properties.name, gpu_count=torch.cuda.device_count(),
                     gpu_capability=f"{properties.major}.{properties.minor}",
                     gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                     cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    return facts



def _child_env() -> Dict[str, str]:
    # The checkout itself on the path: cxr_jetson maps its folders in, so nothing needs installing there.
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already ended
        os.killpg(pid, signal.SIGKILL)


def run_command(command: List[str], timeout_s: float, echo: Callable[[str], None]) -> Dict[str, object]:
    """Run ``command`` in a process group of its own, streaming its output through ``echo``; the whole group
    is killed at ``timeout_s`` and when the command ends (DataLoader workers included, so nothing left over
    holds the GPU in the next step). rc, seconds, timed_out and the last line of output (the error, if any)."""
    start = time.perf_counter()
    # start_new_session: one killpg reaches the step's children too. Our own scripts, as an argument list.
    process = subprocess.Popen(command, cwd=REPO, env=_child_env(), stdout=subprocess.PIPE,  # noqa: S603
                               stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    expired = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (expired.set(), _kill_group(process.pid)))
    timer.start()
    last = ""
    try:
        for line in process.stdout:
            echo(line.rstrip("\n"))
            last = line.strip() or last
        rc = process.wait()
    finally:
        timer.cancel()
        _kill_group(process.pid)
    return {"rc": rc, "seconds": round(time.perf_counter() - start, 1), "timed_out": expired.is_set(),
            "last_line": last[:300]}


def skip_reason(step: Step, environment: Dict, ready: Optional[str]) -> Optional[str]:
    """Why ``step`` cannot run here (a missing import, no CUDA, no input), or None. An environment step that
    failed leaves nothing known: the steps are then tried rather than skipped."""
    modules = environment.get("modules", {})
    missing = [name for name in step.needs if not modules.get(name, {}).get("ok", True)]
    if missing:
        return f"needs {', '.join(missing)}, which does not import here"
    if step.needs_cuda and environment.get("cuda_available") is False:
        return "needs CUDA: torch.cuda.is_available() is False here"
    return ready


@dataclass(frozen=True)
class Plan:
    out: str
    work: str                       # scratch: the trained model, the smoke subset, the environment probe
    data: str                       # the data set to train on; "" when none could be used
    data_problem: Optional[str]     # why not, then
    device: str
    epochs: int
    resolution: int
    runs: Optional[int]             # timed runs of gpu_latency and benchmark.py; None: their defaults
    skip: Sequence[str] = ()        # steps left out on request

    @property
    def model(self) -> str:
        return os.path.join(self.work, "model")


def step_command(name: str, plan: Plan) -> List[str]:
    python, val = sys.executable, os.path.join(plan.data, "val")
    runs = ["--runs", str(plan.runs)] if plan.runs else []
    return {
        "environment": [python, "-m", "bench.gpu_check", "--probe", os.path.join(plan.work, "environment.json")],
        "train_recipes": [python, "-m", "bench.train_recipes", "--device", plan.device, "--epochs", str(plan.epochs),
                          "--resolution", str(plan.resolution), "--data", plan.data, "--model-dir", plan.model,
                          "--output", os.path.join(plan.out, "train_recipes.json")],
        "onnx_export": [python, "onnx_export.py", "--model-dir", plan.model],
        "gpu_latency": [python, "-m", "bench.gpu_latency", "--model", plan.model, "--images", val,
                        "--output", os.path.join(plan.out, "gpu_latency.json")] + runs,
        "benchmark": [python, "benchmark.py", "--model-dir", plan.model, val, "--json", os.path.join(plan.out,
                      "benchmark.json"), "--plot", os.path.join(plan.out, "benchmark.png")] + runs,
    }[name]


def missing_input(name: str, plan: Plan) -> Optional[str]:
    """Why step ``name`` has nothing to work on (checked when it is due: earlier steps make its input)."""
    if name == "benchmark" and not os.path.isfile(os.path.join(REPO, "benchmark.py")):
        return "benchmark.py not present"
    if name == "train_recipes":
        return plan.data_problem
    if name != "environment" and not os.path.isfile(os.path.join(plan.model, BEST_CHECKPOINT)):
        return f"no trained model: train_recipes wrote no {BEST_CHECKPOINT}"
    if name in ("gpu_latency", "benchmark") and not any(f.endswith(".onnx") for f in os.listdir(plan.model)):
        return "no ONNX: onnx_export did not write one"
    return None


def run_step(number: int, step: Step, plan: Plan, environment: Dict, seconds_left: float,
             echo: Callable[[str], None]) -> Dict[str, object]:
    """One step: skipped with its reason, or run under min(its budget, the time left); its record."""
    reason = "left out with --skip" if step.name in plan.skip else \
        skip_reason(step, environment, missing_input(step.name, plan))
    if reason is None and seconds_left < MIN_STEP_S:
        reason = f"no time left of the check's {TOTAL_BUDGET_S} s"
    record: Dict[str, object] = {"name": step.name}
    if reason is not None:
        echo(f"== [{number}/{len(STEPS)}] {step.name}: skipped: {reason}")
        record.update(status="skipped", rc=None, reason=reason)
        return record
    command = step_command(step.name, plan)
    timeout = min(step.budget_s, seconds_left)
    echo(f"== [{number}/{len(STEPS)}] {step.name} (at most {timeout:.0f} s): {' '.join(command)}")
    outcome = run_command(command, timeout, echo)
    status = "ok" if outcome["rc"] == 0 else "timeout" if outcome["timed_out"] else "failed"
    record.update(status=status, command=" ".join(command), budget_s=round(timeout), **outcome)
    echo(f"== {step.name}: {status}, rc {outcome['rc']}, {outcome['seconds']} s"
         + ("" if status == "ok" else f"; last output: {outcome['last_line']}"))
    return record


def steps_to_skip(text: str) -> Tuple[str, ...]:
    """--skip's step names, checked."""
    skip = tuple(name for name in text.split(",") if name)
    unknown = set(skip) - {step.name for step in STEPS}
    if unknown:
        raise ToolkitError(f"--skip {text}: no step {', '.join(sorted(unknown))}; the steps are "
                           + ", ".join(step.name for step in STEPS))
    return skip


def prepare_plan(args: argparse.Namespace, work: str, skip: Tuple[str, ...]) -> Plan:
    """The data and sizes the steps use: --smoke shrinks the data set to a linked subset and the images to 64 px."""
    try:
        data, problem = choose_data(args.data), None
    except ToolkitError as err:
        data, problem = "", str(err)
    resolution = args.resolution
    if args.smoke and data:
        data = smoke_subset(data, os.path.join(work, "smoke_data"))
        resolution = resolution or SMOKE_RESOLUTION
    epochs = args.epochs or (1 if args.smoke else DEFAULT_EPOCHS)
    return Plan(os.path.abspath(args.out), work, os.path.abspath(data) if data else "", problem, args.device,
                epochs, resolution or 224, SMOKE_RUNS if args.smoke else None, skip)


def run_check(plan: Plan, smoke: bool, echo: Callable[[str], None]) -> Dict[str, object]:
    """Every step in order within the overall deadline; gpu_check.json rewritten after each one."""
    started = time.monotonic()
    report: Dict[str, object] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "smoke": smoke,
        "device": plan.device, "epochs": plan.epochs, "resolution": plan.resolution, "data": plan.data,
        "budget_s": TOTAL_BUDGET_S, "environment": {}, "steps": []}
    if plan.data_problem:
        echo(f"data: {plan.data_problem}")
    for number, step in enumerate(STEPS, 1):
        left = TOTAL_BUDGET_S - (time.monotonic() - started)
        report["steps"].append(run_step(number, step, plan, report["environment"], left, echo))
        if step.name == "environment":
            report["environment"] = _load_json(os.path.join(plan.work, "environment.json")) or {}
        report["summary"] = summarise(plan.out)
        report["total_s"] = round(time.monotonic() - started, 1)
        _write_json(os.path.join(plan.out, "gpu_check.json"), report)
    return report


def _write_json(path: str, content: Dict) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
    os.replace(path + ".tmp", path)


def describe_environment(found: Dict, echo: Callable[[str], None]) -> None:
    """One line per fact, and one per module that does not import: which step needs it, or what it is for."""
    modules = found["modules"]
    echo(f"python {found['python']} ({found['executable']}), {found['machine']}, {found['cpus']} CPUs")
    if modules["torch"]["ok"]:
        gpu = (f"{found['gpu']}, capability {found['gpu_capability']}, {found['gpu_memory_gib']} GiB, cuDNN "
               f"{found['cudnn']}, bf16 {found['bf16']}" if found["cuda_available"] else "no CUDA device")
        echo(f"torch {modules['torch']['version']} (CUDA {found['torch_cuda']}): {gpu}")
    if "onnxruntime_providers" in found:
        echo(f"onnxruntime {modules['onnxruntime']['version']}: {', '.join(found['onnxruntime_providers'])}")
    echo(f"cxr_jetson from the checkout at {found['cxr_jetson']}")
    echo("imports: " + ", ".join(f"{name} {m['version']}".strip() for name, m in modules.items() if m["ok"]))
    for name, module in modules.items():
        if not module["ok"]:
            steps = [step.name for step in STEPS if name in step.needs]
            use = f"needed by {', '.join(steps)}" if steps else OPTIONAL_USE.get(name, "not needed by any step")
            echo(f"missing: {name} ({use}): {module['error']}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="The prepared GPU check: environment, both training recipes, "
                                                 "ONNX export, GPU latency and benchmark.py, with a summary.")
    parser.add_argument("--out", default="gpu_check_out", help="output folder (default: gpu_check_out)")
    parser.add_argument("--data", default="", help="data set with train/<CLASS> and val/<CLASS> (default: the first "
                                                   f"of {', '.join(DATA_CANDIDATES)} whose images open)")
    parser.add_argument("--device", default="cuda", help="where both recipes train (default: cuda)")
    parser.add_argument("--epochs", type=int, default=0,
                        help=f"epochs of each recipe (default: {DEFAULT_EPOCHS}, 1 with --smoke)")
    parser.add_argument("--resolution", type=int, default=0,
                        help=f"network input size (default: 224, {SMOKE_RESOLUTION} with --smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a rehearsal: at most {SMOKE_PER_CLASS['train']} train and {SMOKE_PER_CLASS['val']} "
                             f"val images per class, {SMOKE_RESOLUTION} px, 1 epoch, {SMOKE_RUNS} timed runs")
    parser.add_argument("--skip", default="", metavar="STEPS",
                        help=f"comma-separated steps to leave out ({', '.join(step.name for step in STEPS)})")
    parser.add_argument("--stage", action="store_true", help=f"copy the data set's train and val images (links "
                                                             f"followed) to {STAGED} for the carry, and stop")
    parser.add_argument("--probe", metavar="FILE", help=argparse.SUPPRESS)  # the environment step's own child
    return parser


def main(args: argparse.Namespace) -> int:
    if args.probe:
        found = probe_environment()
        describe_environment(found, print)
        _write_json(args.probe, found)
        return 0
    if args.stage:
        return stage(args.data or os.path.join(REPO, DATA_CANDIDATES[1]))
    skip = steps_to_skip(args.skip)
    os.makedirs(args.out, exist_ok=True)
    for name in OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(args.out, name))
    with open(os.path.join(args.out, "gpu_check.log"), "w", encoding="utf-8") as log, \
            tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        echo = _console(log)
        report = run_check(prepare_plan(args, work, skip), args.smoke, echo)
        echo(f"== summary ({report['total_s']} s in all; {os.path.join(args.out, 'gpu_check.json')})")
        print_summary(report["summary"], echo)
        failed = [step["name"] for step in report["steps"] if step["status"] in ("failed", "timeout")]
        for step in report["steps"]:
            why = step.get("reason") or ("" if step["status"] == "ok" else step["last_line"])
            echo(f"  {step['name']:<14} {step['status']:<8} rc {step['rc']}  {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(lambda: main(get_args_parser().parse_args()), "bench.gpu_check")
