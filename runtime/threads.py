"""Process-level facts and settings: usable CPUs, native bf16, torch threads, tokenizer parallelism."""

from __future__ import annotations

import math
import os
from pathlib import Path


def cpu_quota() -> int:
    """CPUs this process may really use: the cgroup quota and the affinity mask, not the host's core count.

    A container on a 64-core host with a 2-CPU quota that starts 64 torch threads
    spends its time being throttled.
    """
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:  # cgroup v2
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        available = min(available, max(1, math.floor(quota)))
    return max(1, available)


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX in the CPU flags. Says what the CPU has, not whether bf16 is faster there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_offers_bf16() -> bool:
    """Whether bf16 autocast on this CPU is worth timing: torch has a oneDNN bf16 path for it
    (AVX-512 and up) or the CPU reports AVX-512 BF16 / AMX.

    Only a candidate, never a choice: on a Xeon with AVX-512 BF16 and no AMX, bf16 trained
    e5 at half fp32's speed, so whoever picks a precision must time it (training/precision_probe.py).
    """
    import torch

    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        pass
    return cpu_has_native_bf16()


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: the CPU quota) and keep the tokenizer single-threaded.

    We tokenize a batch on the calling thread right before the forward pass; a
    Rust thread pool for that would compete with torch for the same cores.
    """
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n = threads or cpu_quota()
    torch.set_num_threads(n)
    return n
