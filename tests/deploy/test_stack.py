"""The real compose stack: build the image, `up`, wait until healthy, use every route a user starts with, kill
a worker and watch compose's restart policy replace it, then `down`.

Runs when a Docker engine answers (`docker info`) and a Compose (v2 `docker compose` or v1 `docker-compose`) is
installed; skips with the reason otherwise. It takes minutes (the image build), so it is marked `slow` and
`docker`: `pytest -m docker -s tests/deploy/test_stack.py` runs it alone and prints the timings that
docker/README.md quotes.

Images come from the environment as for `docker-compose up` (docker/README.md, "Air-gapped builds"):
PYTHON_IMAGE, REDIS_IMAGE, PIP_INDEX_URL, TORCH_INDEX_URL, TORCH_SPEC; when PYTHON_IMAGE is unset and the
images of `scripts/docker-local-images.sh` exist, those are used (Docker Hub unreachable), with PyPI for
torch (a torch wheel in docker/wheels/ wins over it: TORCH_SPEC defaults to its exact version).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import wave
from io import BytesIO
from pathlib import Path

import pytest
from servicekit import free_port, wait_until

httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]
LOCAL_PYTHON = "vrnn-local/python:3.11-bookworm"
LOCAL_REDIS = "vrnn-local/redis:7"
BUILD_TIMEOUT_S = 1800
UP_TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def compose_command() -> list[str] | None:
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def engine_problem() -> str | None:
    if not shutil.which("docker"):
        return "no docker command (apt-get install docker.io)"
    if run(["docker", "info"], check=False, timeout=30).returncode != 0:
        return "no Docker engine answers (start dockerd)"
    if compose_command() is None:
        return "no Compose (docker compose plugin or docker-compose)"
    return None


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


class Stack:
    def __init__(self, project: str, env: dict[str, str]):
        self.compose = [*compose_command(), "-p", project, "-f", str(ROOT / "docker-compose.yml")]
        self.env = env
        self.project = project

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.compose, *args], timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def container(self, service: str) -> str:
        ids = self("ps", "-q", service).stdout.split()
        assert ids, f"no container of {service}"
        return ids[0]

    def inspect(self, container: str) -> dict:
        return json.loads(run(["docker", "inspect", container]).stdout)[0]

    def health(self, service: str) -> str | None:
        state = self.inspect(self.container(service))["State"]
        return (state.get("Health") or {}).get("Status")

    def wait_healthy(self, services: list[str], timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if all(self.health(s) == "healthy" for s in services):
                return time.monotonic() - start
            time.sleep(1)
        logs = self("logs", "--tail", "40", check=False).stdout
        raise AssertionError(f"not healthy after {timeout} s: {[(s, self.health(s)) for s in services]}\n{logs}")


def wait_ready(base: str, timeout: float) -> float:
    start = time.monotonic()
    wait_until(f"{base}/readyz", None, None, timeout)
    return time.monotonic() - start


def carry_host_pip_settings() -> list[Path]:
    """The host's pip settings into the build's local folders, where those are empty: the CA bundle of PIP_CERT
    (a proxy with its own CA) into docker/certs/, and a torch wheel of PIP_FIND_LINKS into docker/wheels/. What
    a developer would copy by hand (docker/README.md, "Air-gapped builds"); returns the files it added."""
    added: list[Path] = []
    certs, wheels = ROOT / "docker" / "certs", ROOT / "docker" / "wheels"
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file() and not list(certs.glob("*.crt")):
        added.append(certs / "host-pip-cert.crt")
        shutil.copyfile(cert, added[-1])
    if not list(wheels.glob("torch-*.whl")):
        for folder in os.environ.get("PIP_FIND_LINKS", "").split():
            found = sorted(Path(folder).glob("torch-*cp311*.whl")) if Path(folder).is_dir() else []
            if found:
                added.append(wheels / found[-1].name)
                shutil.copyfile(found[-1], added[-1])
                break
    return added


@pytest.fixture(scope="module")
def stack():
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    added = carry_host_pip_settings()
    env = dict(os.environ)
    if "PYTHON_IMAGE" not in env and image_exists(LOCAL_PYTHON):
        env["PYTHON_IMAGE"] = LOCAL_PYTHON
        env.setdefault("TORCH_INDEX_URL", "https://pypi.org/simple")
    if "TORCH_SPEC" not in env:
        # A torch wheel put in docker/wheels/ must win over PyPI's newest (CUDA, gigabytes): pin its version.
        wheels = sorted((ROOT / "docker" / "wheels").glob("torch-*.whl"))
        if wheels:
            env["TORCH_SPEC"] = f"torch=={wheels[-1].name.split('-')[1]}"
    if "REDIS_IMAGE" not in env and image_exists(LOCAL_REDIS):
        env["REDIS_IMAGE"] = LOCAL_REDIS
    port = free_port()
    env["API_PORT"] = str(port)
    env["VRNN_TAG"] = "smoke"
    s = Stack(f"vrnnsmoke{os.getpid()}", env)
    timings: dict[str, float] = {}
    try:
        start = time.monotonic()
        s("build", timeout=BUILD_TIMEOUT_S)
        timings["build_s"] = time.monotonic() - start
        start = time.monotonic()
        s("up", "-d", timeout=UP_TIMEOUT_S)
        timings["up_s"] = time.monotonic() - start
        timings["ready_s"] = timings["up_s"] + wait_ready(f"http://127.0.0.1:{port}", UP_TIMEOUT_S)
        timings["healthy_s"] = timings["up_s"] + s.wait_healthy(["redis", "api", "worker"], UP_TIMEOUT_S)
        s.base = f"http://127.0.0.1:{port}"
        s.timings = timings
        yield s
    finally:
        start = time.monotonic()
        s("down", "-v", "--remove-orphans", timeout=600, check=False)
        timings["down_s"] = time.monotonic() - start
        print(f"\ncompose stack timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        for path in added:
            path.unlink(missing_ok=True)


def post(s: Stack, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{s.base}{path}", timeout=120, **kw)


def test_speech_handwriting_score_ready_models(stack):
    r = post(stack, "/generate/speech", json={"seed": 7, "duration_s": 1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() == 16000
    again = post(stack, "/generate/speech", json={"seed": 7, "duration_s": 1})
    assert again.content == r.content, "the same seed gives the same bytes"

    svg = post(stack, "/generate/handwriting", json={"seed": 3, "steps": 300})
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.lstrip().startswith(("<svg", "<?xml")) and "<path" in svg.text

    score = post(stack, "/score", files={"file": ("speech.wav", r.content, "audio/wav")}, data={"num_samples": "8"})
    assert score.status_code == 200, score.text
    body = score.json()
    assert body["log_likelihood"] >= body["elbo"], body

    ready = httpx.get(f"{stack.base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    models = httpx.get(f"{stack.base}/models", timeout=10).json()
    names = {m["name"] for m in models["models"]}
    shipped = {p.stem for p in (ROOT / "checkpoints").glob("*.safetensors")}
    assert shipped <= names, (shipped, names)


def test_a_killed_worker_is_replaced_by_the_restart_policy(stack):
    worker = stack.container("worker")
    before = stack.inspect(worker)["RestartCount"]
    pids = run(["docker", "top", worker, "-eo", "pid,args"]).stdout.splitlines()[1:]
    python = [line.split()[0] for line in pids if "-m worker" in line]
    assert python, pids
    start = time.monotonic()
    os.kill(int(python[0]), 9)  # as the kernel's OOM killer would
    deadline = start + UP_TIMEOUT_S
    while stack.inspect(worker)["RestartCount"] == before:
        assert time.monotonic() < deadline, "compose did not restart the killed worker"
        time.sleep(0.5)
    ready = wait_ready(stack.base, UP_TIMEOUT_S)
    r = post(stack, "/generate/speech", json={"seed": 1, "duration_s": 0.5})
    assert r.status_code == 200, r.text
    stack.timings["worker_replaced_s"] = time.monotonic() - start
    stack.timings["ready_after_kill_s"] = ready


def test_image_healthcheck_without_a_role_passes_for_the_api(stack):
    """`docker run IMAGE api`: the image's own HEALTHCHECK (no role given) must find the API healthy."""
    api = stack.container("api")
    image = stack.inspect(api)["Config"]["Image"]
    name = f"{stack.project}-lone-api"
    run(
        ["docker", "run", "-d", "--name", name, "--health-interval", "2s", "--health-start-period", "60s", image, "api"]
    )
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while True:
            state = json.loads(run(["docker", "inspect", name]).stdout)[0]["State"]
            status = state["Health"]["Status"]
            if status == "healthy":
                break
            log = state["Health"].get("Log") or [{}]
            assert status != "unhealthy", log[-1]
            assert time.monotonic() < deadline, f"still {status}: {log[-1]}"
            time.sleep(1)
    finally:
        run(["docker", "rm", "-f", name], check=False)


def test_the_gpu_override_creates_workers_with_a_device_request(stack):
    """Without a GPU here, create (not start) the stack with docker-compose.gpu.yml on the CPU image: the worker
    must carry an NVIDIA device request (Compose v1 once refused the file's interpolated `count`)."""
    env = {**stack.env, "VRNN_CUDA_TAG": stack.env["VRNN_TAG"]}
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.gpu.yml")]
    gpu = [*compose_command(), "-p", f"{stack.project}gpu", *files]
    try:
        run([*gpu, "up", "--no-start", "--no-build"], env=env, cwd=ROOT, timeout=120)
        labels = [f"label=com.docker.compose.project={stack.project}gpu", "label=com.docker.compose.service=worker"]
        worker = run(["docker", "ps", "-aq", "--filter", labels[0], "--filter", labels[1]]).stdout.split()[0]
        requests = json.loads(run(["docker", "inspect", worker]).stdout)[0]["HostConfig"]["DeviceRequests"]
        assert requests and requests[0]["Driver"] == "nvidia" and requests[0]["DeviceIDs"] == ["0"], requests
        assert ["gpu"] in requests[0]["Capabilities"] or "gpu" in requests[0]["Capabilities"], requests
    finally:
        run([*gpu, "down", "-v"], env=env, cwd=ROOT, timeout=120, check=False)
