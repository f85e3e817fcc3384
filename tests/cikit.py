"""Under CI, a test that would skip because a required tool is missing fails instead, naming the tool.

Outside CI, tests that need something this machine lacks skip and say why, so that `pytest` runs anywhere. Under CI
(the CI environment variable set to anything but empty, 0, false, no or off: CI services set CI=true, and so does
.ci/run) the same skip would let the run go green with the Redis, fault, browser or speech-demo tests never run, so
it is a failure instead. Required: Redis (redis-server on PATH, a Redis answering where a test expects one),
Chromium and chromedriver (and selenium) for the page test, festival and espeak-ng for the speech demo corpus, and
Tesseract for the sample-quality tests, every Python package a test imports with pytest.importorskip (all are in the
[dev] extra). Not required: a Docker engine, so a skip whose reason mentions Docker stays a skip.

A skip is recognised by its reason, which every such site writes naming the tool; tests/conftest.py applies these
hooks to every test and collection report, so a new skip site needs nothing more than a reason naming its tool.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

# Reasons that say a required tool is missing; the first group names it.
_REQUIRED = re.compile(
    r"(redis-server|redis|chromium-driver|chromedriver|chromium|selenium|festival|espeak-ng|tesseract)"
    r"|could not import '([^']+)'",  # pytest.importorskip's reason
    re.IGNORECASE,
)
_NOT_REQUIRED = re.compile(r"docker", re.IGNORECASE)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def required_tool(reason: str) -> str | None:
    """The required tool whose absence `reason` reports, or None (a skip for another reason, or Docker's)."""
    if _NOT_REQUIRED.search(reason):
        return None
    found = _REQUIRED.search(reason)
    if found is None:
        return None
    return found.group(2) or found.group(1).lower()


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def enforce(report: Any) -> None:
    """Under CI, turn `report`'s skip into a failure when it was for a missing required tool."""
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    tool = required_tool(reason)
    if tool is None:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"required tool missing under CI: {tool}. CI={os.environ.get('CI')!r} makes this a failure, not a skip "
        f"(install it, e.g. `make system-deps` as root, or unset CI to skip). The skip said: {reason}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    report = yield
    enforce(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: Any) -> Any:
    report = yield
    enforce(report)
    return report
