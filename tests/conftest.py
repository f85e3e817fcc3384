"""Every test: under CI a skip for a missing required tool is a failure (see cikit.py). The kits' folders are on
the path for every test file: tests/app (apikit), tests/worker (workerkit) and scripts/ (servicekit, the process
helpers shared with scripts/loadtest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from cikit import pytest_make_collect_report, pytest_runtest_makereport

ROOT = Path(__file__).resolve().parents[1]
for _kit in (ROOT / "scripts", ROOT / "tests" / "worker", ROOT / "tests" / "app"):
    if str(_kit) not in sys.path:
        sys.path.insert(0, str(_kit))

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]
