"""Process-level tuning for long-running entry points (training, benchmarks, workers)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import sys
from pathlib import Path

import torch

# glibc returns every freed block above its mmap threshold (128 KiB, adaptive up to 32 MiB) to
# the kernel, so each training step pays page faults to get its large activation tensors back.
# Keeping up to 1 GiB blocks in the heap removes that cost (measured by `python -m model.bench`).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30


def tune_malloc() -> bool:
    """Ask glibc to keep large freed blocks for reuse; True if it was applied (Linux/glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _KEEP_BYTES)
    except (OSError, AttributeError):
        return False
    return bool(ok)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when PyTorch sees a GPU, else the CPU; "cpu", "cuda" or "cuda:N" as asked.
    Asking for CUDA without a GPU raises ValueError with a message saying what to use instead."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but PyTorch sees no CUDA device (use --device cpu)")
    return torch.device(name)


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's
    `--cpus`, cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota, or None when unlimited or unreadable."""
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def threads_for(setting: int, sharers: int, cores: int | None = None) -> int:
    """Intra-op threads for one of `sharers` job runners on this machine's cores: `setting` when positive
    (the operator's choice), else the cores divided among the runners (at least 1). Several runners each
    using every core fight over them and serve fewer requests under load than one at a time."""
    if setting > 0:
        return setting
    return max(1, (cores or available_cores()) // max(1, sharers))


def apply_threads(threads: int | None = None) -> None:
    """Give the calling thread `threads` intra-op threads (None: the process's count as this thread reads it now;
    torch.set_num_threads): OpenMP and MKL keep it per thread, so a thread that never set it runs every small op
    across all cores. Call it first in every thread that runs models (measured on 2 cores, one busy: 2 s of speech
    took 301 ms in a fresh thread, 86 ms after it). A job runner passes its configured count: a thread started later
    would otherwise take whatever the process's count is then, and on some CPUs a product's rounding depends on
    it (a score computed by 1 or 2 threads differs in the 8th digit)."""
    torch.set_num_threads(torch.get_num_threads() if threads is None else threads)


def set_threads(threads: int) -> int:
    """Set PyTorch's intra-op threads (and one inter-op thread, before any parallel work); returns `threads`."""
    torch.set_num_threads(threads)
    # Raises once set, or once parallel work has started: the intra-op setting is what matters.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return threads
