"""Every test: under CI a skip for a missing required tool is a failure (see cikit.py)."""

from __future__ import annotations

from cikit import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]
