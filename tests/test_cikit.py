"""tests/cikit.py: under CI a skip for a missing required tool fails, naming it; other skips stay skips. Runs pytest
on a few small test files, with and without CI, in a child process (with tests/conftest.py's hooks)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CASES = """
import socket

import pytest
from rediskit import redis_db


def _dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_redis_answering():
    with redis_db(f"redis://127.0.0.1:{_dead_port()}/15"):
        pass


def test_no_redis_server():
    pytest.skip("needs redis-server on PATH")


@pytest.mark.skipif(True, reason="neither festival nor espeak-ng is installed (apt-get install festival)")
def test_no_synthesiser():
    pass


@pytest.fixture(scope="module")
def browser():
    pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")


def test_no_browser(browser):
    pass


def test_no_docker_engine():
    pytest.skip("needs a Docker engine (docker info failed) to run the stack with its redis service")


def test_other_reason():
    pytest.skip("checks the error without a GPU")


@pytest.mark.xfail(reason="a known redis quirk", strict=True)
def test_expected_failure():
    raise AssertionError
"""

MISSING_PACKAGE = """
import pytest

pytest.importorskip("no_such_package_for_cikit")


def test_never_runs():
    pass
"""


def run(tmp_path: Path, ci: str | None) -> tuple[dict[str, str], str]:
    """-> ({test or file name: passed|skipped|failed|error}, pytest's output)."""
    folder = tmp_path / f"ci-{ci}"
    folder.mkdir()
    (folder / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (folder / "test_cases.py").write_text(CASES)
    (folder / "test_missing_package.py").write_text(MISSING_PACKAGE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    report = folder / "report.xml"
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--junitxml={report}", str(folder)]
    args.append("--continue-on-collection-errors")  # else a collection error stops the run before the other cases
    done = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name") or ""
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[name or case.get("classname", "")] = {"skipped": "skipped", "failure": "failed", "error": "error"}.get(
            kinds[0] if kinds else "", "passed"
        )
    return outcomes, done.stdout + done.stderr


def test_outside_ci_missing_tools_skip(tmp_path):
    outcomes, output = run(tmp_path, None)
    assert outcomes == {
        "test_no_redis_answering": "skipped",
        "test_no_redis_server": "skipped",
        "test_no_synthesiser": "skipped",
        "test_no_browser": "skipped",
        "test_no_docker_engine": "skipped",
        "test_other_reason": "skipped",
        "test_expected_failure": "skipped",  # junit's word for xfailed
        "test_missing_package": "skipped",
    }, output


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_missing_required_tools_fail_naming_them(tmp_path, ci):
    outcomes, output = run(tmp_path, ci)
    assert outcomes == {
        "test_no_redis_answering": "failed",
        "test_no_redis_server": "failed",
        "test_no_synthesiser": "error",  # a skipif fails in setup
        "test_no_browser": "error",  # so does a fixture's skip
        "test_no_docker_engine": "skipped",  # Docker is not a required tool
        "test_other_reason": "skipped",
        "test_expected_failure": "skipped",
        "test_missing_package": "error",  # a collection error: the run fails
    }, output
    for tool in ("redis", "redis-server", "festival", "chromium", "no_such_package_for_cikit"):
        assert f"required tool missing under CI: {tool}." in output, tool


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_ci_set_to_false_is_not_ci(tmp_path, ci):
    outcomes, output = run(tmp_path, ci)
    assert set(outcomes.values()) == {"skipped"}, output
