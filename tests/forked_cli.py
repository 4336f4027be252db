"""Run an entry script's ``cli()`` as its own process, forked from the test process.

The bad-input corpus runs the commands dozens of times; a fresh interpreter per case would spend
most of the suite importing torch. A forked child is still a separate process running the real
entry point with its own argv, stdout, stderr and exit status, and an uncaught exception prints the
interpreter's own traceback there, exactly as ``python3 train.py ...`` would.
"""
from __future__ import annotations

import importlib
import io
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

ENTRY_POINTS = {
    "classify.py": "cxr_jetson.edge.classify",
    "train.py": "cxr_jetson.train.main",
    "onnx_export.py": "cxr_jetson.export.onnx_export",
    "trt_build.py": "cxr_jetson.edge.trt_build",
    "data.prepare": "cxr_jetson.data.prepare",
}


@dataclass
class Finished:
    returncode: int  # -N: killed by signal N (a timeout is SIGKILL)
    stdout: str
    stderr: str
    timed_out: bool = False
    peak_rss_growth_mb: float = 0.0  # the child's peak resident memory above what it started with (the parent's)


def _child(module: str, program: str, argv: Sequence[str], out_path: str, err_path: str, cwd: Optional[str]) -> None:
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    # pytest's capture objects belong to the parent: the child writes to its own descriptors.
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if cwd:
        os.chdir(cwd)
    status = 1
    try:
        if "torch" in sys.modules:  # a forked OpenMP pool from the parent must not be reused
            sys.modules["torch"].set_num_threads(1)
        sys.argv = [program, *argv]
        importlib.import_module(module).cli()
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def run_forked(program: str, *argv: str, tmp_dir: str, cwd: Optional[str] = None, timeout: float = 120) -> Finished:
    """Run ``program`` (a key of ENTRY_POINTS) with ``argv``; a run past ``timeout`` is killed and marked."""
    out_path, err_path = os.path.join(tmp_dir, ".stdout"), os.path.join(tmp_dir, ".stderr")
    start_rss_kb = _resident_kb()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(ENTRY_POINTS[program], program, argv, out_path, err_path, cwd)
    deadline, timed_out = time.monotonic() + timeout, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    growth = max(0.0, (usage.ru_maxrss - start_rss_kb) / 1024)  # ru_maxrss is in KiB on Linux
    with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err:
        return Finished(os.waitstatus_to_exitcode(status), out.read(), err.read(), timed_out, growth)


def _resident_kb() -> int:
    """This process's resident memory: a forked child starts with all of it."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` for a child that is stopped with SIGINT: Ctrl+C's default, as a terminal starts a
    program. A run started in the background by a shell ignores SIGINT, and its children would inherit
    that (Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A small go-between that runs its arguments as a command, then prints "STATUS PEAK_KIB" as its last line:
# a child forked straight from a large process starts its peak resident size from that process's.
_PEAK_OF_CHILD = ("import resource, subprocess, sys; status = subprocess.call(sys.argv[1:]); "
                  "print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)")


def with_peak_memory(command: Sequence[str]) -> List[str]:
    """``command`` run through the go-between; read its result with ``peak_memory``."""
    return [sys.executable, "-c", _PEAK_OF_CHILD, *command]


def peak_memory(stdout: str) -> Tuple[int, int]:
    """(exit status, peak resident KiB) of a command run ``with_peak_memory``, from its stdout."""
    status, peak_kib = stdout.splitlines()[-1].split()
    return int(status), int(peak_kib)
