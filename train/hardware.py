"""Pick the device and the mixed-precision type training runs with, and keep the host's freed memory."""
from __future__ import annotations

import ctypes
import sys
from typing import Optional

import torch

from cxr_jetson.core.errors import ToolkitError

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def select_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ToolkitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ToolkitError(f"--device {name} asked for CUDA, but torch sees no CUDA GPU here; use --device cpu")
    return device


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEPT_FREE_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for the next allocation; False where that does not apply (not glibc).

    By default glibc gives every block over 32 MB its own mapping and returns it to the system when freed,
    so each training step's activations are mapped again and zero-filled by the kernel page by page: 40-64
    thousand page faults a ResNet-18 step at batch 32, 0.6-2.5 thousand with this (the README gives the
    time it saved, within the measuring machine's drift). jemalloc or tcmalloc, which PyTorch's CPU tuning
    guides preload for the same reason, would do as well; this needs neither. The process then holds on to
    its peak memory, which a training run reaches every step anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: their allocator as it is
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEPT_FREE_BYTES))


def _cpu_has_fast_bf16() -> bool:
    # oneDNN runs bf16 convolutions natively on AVX512-BF16/AMX CPUs (measured 3.6x faster than fp32
    # for ResNet-18 training on one); elsewhere bf16 is emulated and slower than fp32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_amp(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``mode`` on ``device``, or None for full fp32."""
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def grad_scaler(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """A loss scaler for fp16 on CUDA (bf16 and fp32 need none); torch.amp's since 2.3, torch.cuda.amp's before."""
    if amp_dtype != torch.float16 or device.type != "cuda":
        return None
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()
