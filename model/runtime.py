"""Process-level tuning for long-running entry points (training, benchmarks, workers)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
