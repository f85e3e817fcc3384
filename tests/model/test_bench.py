"""The benchmark runs end to end and reports what the issue asks for (speed is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_prints_the_summary():
    cmd = [sys.executable, "-m", "model.bench", "--quick", "--batch", "4", "8", "--steps", "5", "--num-samples", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout)
    assert [t["batch"] for t in result["training"]] == [4, 8]
    for t in result["training"]:
        assert t["seconds_per_step"]["hoisted"] > 0 and t["seconds_per_step"]["reference"] > 0
        assert t["speedup_vs_reference"] > 0 and t["flops_per_step"] > 0
        assert t["fraction_of_matmul_rate"]["hoisted"] > 0
    ll = result["log_likelihood"]
    assert ll["num_samples"] == 4 and ll["is_over_elbo"] > 0
    assert 1 < ll["flops_ratio"] < 4 and ll["fraction_of_matmul_rate"]["importance_sampled"] > 0  # 4 samples
    assert result["sampling"]["audio_seconds"] > 1.9 and result["sampling"]["real_time_factor"] > 0
    hw = result["handwriting_step"]
    assert hw["steps"] == 50 and hw["seconds"]["stepper"] > 0 and hw["seconds"]["module_loop"] > 0
    engine = result["engine"]
    assert engine["requests"] == 4 and engine["steps"] == 20 and engine["throughput_ratio"] > 0


def test_bench_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, "-m", "model.bench", "--batch", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "must be positive" in proc.stderr


def test_a_report_keeps_other_machines_sections_and_replaces_its_own():
    from model.bench import REPORT_TITLE, merge_report

    a1, b1, a2 = (
        "## cpu: A, 2 threads\n\nfirst run of A",
        "## cpu: B, 2 threads\n\nB's numbers",
        "## cpu: A, 2 threads\n\nA again",
    )
    one = merge_report("", a1)
    assert one.startswith(REPORT_TITLE) and "first run of A" in one
    two = merge_report(one, b1)
    assert two.index("first run of A") < two.index("B's numbers")
    three = merge_report(two, a2)
    assert "first run of A" not in three and three.index("A again") < three.index("B's numbers")
    assert three.count("## cpu: A") == 1 and merge_report(three, a2) == three


def test_a_report_in_another_format_is_replaced_whole():
    """A file that is not a per-machine report (an older report, other prose) is not mined for sections."""
    from model.bench import REPORT_INTRO, merge_report

    old = (
        "# Benchmarks of the model library\n\nProduced by x.\n\n## Training step\n\nold\n\n## Likelihood and sampling\n"
    )
    new = merge_report(old, "## cpu: A, 2 threads\n\nnumbers")
    assert REPORT_INTRO in new and "## Training step" not in new and "Produced by x." not in new
    assert new.count("## ") == 1
