"""Process-level tuning for long-running entry points (training, benchmarks, workers)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
