"""model.runtime's thread sizing: job runners that share a machine's cores divide them instead of each taking
all of them (each taking all collapsed throughput under load: docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.runtime import _cgroup_quota, available_cores, threads_for

ROOT = Path(__file__).resolve().parents[2]


def test_an_explicit_setting_wins():
    assert threads_for(3, sharers=8, cores=2) == 3


@pytest.mark.parametrize(("sharers", "cores", "want"), [(1, 16, 16), (2, 16, 8), (3, 16, 5), (2, 2, 1), (4, 2, 1)])
def test_auto_divides_the_cores_among_the_runners(sharers, cores, want):
    assert threads_for(0, sharers=sharers, cores=cores) == want


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(tmp_path) is None


def test_available_cores_is_capped_by_the_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path) == affinity  # no quota files: the affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: still one
    assert available_cores(tmp_path) == 1


def torch_threads_of(code: str, env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_the_embedded_backend_sizes_threads_for_its_job_threads(tmp_path):
    """An embedded app with EMBEDDED_WORKERS job threads gives each cores // threads intra-op threads
    (TORCH_THREADS overrides); in a fresh process, as a server starts."""
    code = (
        "import torch\n"
        "from app.backends.embedded import EmbeddedBackend\n"
        "from app.settings import Settings\n"
        "b = EmbeddedBackend(Settings())\n"
        "b.start()\n"
        "assert b.torch_threads == torch.get_num_threads(), (b.torch_threads, torch.get_num_threads())\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TORCH_THREADS")}
    env.update(CHECKPOINT_DIR=str(tmp_path), EMBEDDED_WORKERS="1")
    assert torch_threads_of(code, env) == available_cores()
    env["EMBEDDED_WORKERS"] = "64"
    assert torch_threads_of(code, env) == 1
    env["TORCH_THREADS"] = "3"
    assert torch_threads_of(code, env) == 3


def test_the_worker_takes_one_thread_unless_told(monkeypatch):
    from worker.__main__ import build_parser

    monkeypatch.delenv("TORCH_THREADS", raising=False)
    assert build_parser().parse_args([]).threads == 1
    monkeypatch.setenv("TORCH_THREADS", "4")
    assert build_parser().parse_args([]).threads == 4
    assert build_parser().parse_args(["--threads", "2"]).threads == 2
    monkeypatch.setenv("TORCH_THREADS", "0")
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([])
    assert e.value.code == 2


_THREADS_CHILD = r"""
import ctypes, threading, torch
from model.runtime import apply_threads, set_threads
from model.engine import SamplingEngine
from model.vrnn import build_model
from model.config import ModelConfig

# OpenMP's thread count as the calling thread sees it, from the runtime torch loaded (asking torch would set it).
gomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line or "libiomp" in line})
omp = ctypes.CDLL(gomp[0]).omp_get_max_threads

set_threads(1)
seen = {}
def fresh(key, fix):
    if fix:
        apply_threads()
    seen[key] = omp()
for key, fix in (("fresh", False), ("applied", True)):
    t = threading.Thread(target=fresh, args=(key, fix)); t.start(); t.join()
engine = SamplingEngine(build_model(ModelConfig(modality="handwriting", family="rnn", output="gauss", x_dim=3, h_dim=8,
                                                mlp_layers=1, mlp_width=8, z_dim=2)), max_batch=2)
import model.engine as eng
eng.apply_threads = lambda threads=None: (apply_threads(threads), seen.__setitem__("engine", omp()))
engine.start(); engine.stop()
print(seen["fresh"], seen["applied"], seen["engine"], omp())
"""


def test_every_model_thread_takes_the_process_thread_count():
    """(Linux, an OpenMP build of torch.) OpenMP keeps its thread count per thread: a fresh thread runs on every
    core whatever torch.set_num_threads said in the main thread (5x slower jobs on 2 shared cores) until
    apply_threads; the engine's thread applies it."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", _THREADS_CHILD], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fresh, applied, engine, main = map(int, out.stdout.split())
    assert (applied, engine, main) == (1, 1, 1)
    if (os.cpu_count() or 1) > 1:
        assert fresh > 1  # what apply_threads is for: without it the thread would use every core
