"""The machine a benchmark ran on, for its JSON: this project's CPU machines differ from day to day (one
without VNNI or native bf16, one with AMX), and a ratio is only read right beside the CPU that made it."""
from __future__ import annotations

import os
import platform

# The instruction sets that change which precision is fast here: INT8 dot products and native bf16.
_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe() -> str:
    """``"<CPU model>, N cores, <features>"``; the CPU model from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    features = [name for name in _FEATURES if name in flags]
    return f"{model}, {os.cpu_count()} cores" + (f" ({' '.join(features)})" if features else "")
