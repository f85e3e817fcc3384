"""Argument types shared by the command lines: each rejects a bad value with a message that says
what to give instead (argparse then exits with status 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 64 bits; keep seeds signed-safe


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


seed = whole_number(0, MAX_SEED)
positive_int = whole_number(1)


def finite_number(low: float, low_open: bool) -> Callable[[str], float]:
    """A parser of finite numbers above `low` (`low_open`: strictly above)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if low_open else '>='} {low:g}, got {text}")
        return value

    return parse
