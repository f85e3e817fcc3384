"""Smoke test of scripts/loadtest.py: its whole path (start an embedded `python -m app` on tiny checkpoints, run
every scenario at concurrency 2 for a handful of requests, write the report and the JSON) in seconds."""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
from apikit import write_checkpoints
from servicekit import ROOT

pytest.importorskip("httpx")


def load_script():
    spec = importlib.util.spec_from_file_location("vrnn_loadtest", ROOT / "scripts" / "loadtest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_percentiles_are_ordered_and_exact_on_small_samples():
    lt = load_script()
    assert lt.percentile([], 50) is None
    assert lt.percentile([3.0], 99) == 3.0
    xs = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert lt.percentile(xs, 0) == 0.1 and lt.percentile(xs, 50) == 0.3 and lt.percentile(xs, 100) == 0.5
    assert lt.percentile(xs, 50) <= lt.percentile(xs, 95) <= lt.percentile(xs, 99) <= lt.percentile(xs, 100)


def test_fault_tests_are_listed_with_their_docstrings(tmp_path):
    lt = load_script()
    (tmp_path / "test_faults_a.py").write_text('"""Kills things."""\n\ndef test_kill():\n    """A worker dies."""\n')
    (tmp_path / "test_other.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "test_faults_broken.py").write_text("def (:\n")
    (tmp_path / "test_metrics.py").write_text("def test_own():\n    pass\n")  # the script's own: not listed
    found = lt.fault_tests(tmp_path)
    assert [f["file"] for f in found] == ["test_faults_a.py", "test_faults_broken.py", "test_other.py"]
    assert found[0]["doc"] == "Kills things." and found[0]["tests"] == [("test_kill", "A worker dies.")]
    assert "could not be read" in found[1]["doc"]


@pytest.mark.slow
def test_a_small_embedded_run_writes_a_complete_report(tmp_path):
    lt = load_script()
    checkpoints = write_checkpoints(tmp_path / "ckpt")
    report, raw = tmp_path / "RELIABILITY.md", tmp_path / "raw.json"
    argv = ["--embedded", "--checkpoints", str(checkpoints), "--concurrency", "2", "--requests", "4"]
    argv += ["--seconds", "30", "--warmup", "1", "--max-total-s", "120", "--report", str(report), "--json", str(raw)]
    result = lt.main(argv)

    assert json.loads(raw.read_text())["runs"] == result["runs"]
    runs = result["runs"]
    # Every scenario with one client per loop, then the first once more through a single client.
    assert [r["scenario"] for r in runs] == [*lt.DEFAULT_SCENARIOS, "speech2"] and all(
        r["concurrency"] == 2 for r in runs
    )
    assert [r["clients"] for r in runs] == [2, 2, 2, 2, 2, 1]
    for r in runs:
        assert r["requests"] == 4 and r["ok"] == 4 and r["statuses"] == {"200": 4}, r
        assert r["errors"] == r["backpressure_503"] == r["limited_429"] == 0 and r["stopped_by"] == "requests"
        assert 0 < r["p50_s"] <= r["p95_s"] <= r["p99_s"] <= r["max_s"] and r["rps"] > 0
        assert r["cpu_ms_per_request"]["api"] > 0 and set(r["cpu_ms_per_request"]) == {"api", "client"}  # embedded
    kinds = result["server"]["kinds"]
    assert kinds["score"]["jobs"] == 2 * (4 + 1) and kinds["generate_speech"]["failures"] == 0
    assert result["server"]["workers"] == 2

    text = report.read_text()
    assert text.startswith("# Reliability") and "python scripts/loadtest.py --embedded" in text
    assert re.search(r"Machine: \d+ CPU cores", text) and "Load average" in text
    for name in lt.DEFAULT_SCENARIOS:
        assert f"## {lt.SCENARIOS[name].title}" in text
    rows = [line for line in text.splitlines() if re.match(r"\| 2 \| 2 \| 4 \| 4 \|", line)]
    assert len(rows) == len(lt.DEFAULT_SCENARIOS)
    for row in rows:  # p50 <= p95 <= p99 as written (ms)
        cells = [c.strip() for c in row.strip("|").split("|")]
        p50, p95, p99 = (float(c) for c in cells[6:9])
        assert p50 <= p95 <= p99
    assert "## Observations" in text and "x 503" in text
    assert "## Fault tests (tests/reliability/)" in text and "pytest -q tests/reliability" in text
