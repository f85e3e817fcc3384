"""docker-compose.yml and docker-compose.gpu.yml, checked without a Docker engine.

Both files (and their merge, as `docker compose -f docker-compose.yml -f docker-compose.gpu.yml` sees it)
are validated against the Compose Specification's JSON schema, the copy check-jsonschema ships
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, from the compose-spec project, Apache-2.0), so
nothing is fetched at test time. Then what the deployment relies on: Redis healthy before the API and the
workers start, health checks, restart policies, read-only checkpoints, workers that `--scale`, a grace period
longer than a job may run, and NVIDIA GPUs reserved by the override.

What this cannot check: that images build and containers start (no Docker engine here), variable interpolation
beyond `${VAR:-default}`, and Compose's own semantic checks (e.g. a `depends_on` cycle).
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="needs PyYAML (pip install 'PyYAML>=6,<7')")
jsonschema = pytest.importorskip("jsonschema", reason="needs jsonschema (pip install 'check-jsonschema>=0.28,<1')")

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"
CHECKPOINT_MOUNT = "/checkpoints"


@pytest.fixture(scope="module")
def schema() -> dict:
    try:
        path = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
        return json.loads(path.read_text(encoding="utf-8"))
    except ModuleNotFoundError:
        pytest.skip("needs the Compose Specification schema that check-jsonschema ships: pip install check-jsonschema")


def load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)  # resolves the file's anchors and `<<` merge keys, as Compose does


def interpolate(value):
    """Compose's `${VAR:-default}` / `${VAR-default}` / `${VAR}` with no variable set: the default, or ""."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value


def merge(base, override):
    """Compose's merge of an override file, for what these files use: mappings merge key by key; lists of
    volumes/ports/devices are replaced whole here (Compose merges some by target: the override adds none)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = copy.deepcopy(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def seconds(duration: str | int) -> float:
    """A Compose duration ("1m30s", "5m", "330s", 90) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", duration.strip())
    assert parts and duration.strip(), f"not a Compose duration: {duration!r}"
    h, m, s, ms = (float(x) if x else 0.0 for x in parts.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def errors(schema: dict, doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.fixture(scope="module")
def base() -> dict:
    return load(BASE)


@pytest.fixture(scope="module")
def gpu() -> dict:
    return load(GPU)


@pytest.fixture(scope="module")
def merged(base, gpu) -> dict:
    return merge(base, gpu)


# The schema ------------------------------------------------------------------------------------------------------


def test_schema_is_the_compose_specification(schema):
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


@pytest.mark.parametrize("path", [BASE, GPU], ids=lambda p: p.name)
def test_files_are_valid_compose(schema, path):
    doc = load(path)
    assert errors(schema, doc) == []
    assert errors(schema, interpolate(doc)) == []


def test_merged_gpu_configuration_is_valid_compose(schema, merged):
    assert errors(schema, merged) == []
    assert errors(schema, interpolate(merged)) == []


def test_validation_catches_mistakes(schema, base):
    """The schema is strict enough to matter: a misspelt key or a wrong type is an error."""
    typo = copy.deepcopy(base)
    typo["services"]["worker"]["healthchek"] = typo["services"]["worker"].pop("healthcheck")
    assert errors(schema, typo)
    wrong = copy.deepcopy(base)
    wrong["services"]["api"]["depends_on"] = {"redis": {"condition": "healthy"}}
    assert errors(schema, wrong)


# What the deployment relies on -----------------------------------------------------------------------------------


def test_services(base):
    assert set(base["services"]) == {"redis", "api", "worker"}


def test_redis(base):
    redis = base["services"]["redis"]
    image = interpolate(redis["image"])  # REDIS_IMAGE overrides it (air-gapped engines: docker/README.md)
    assert redis["image"].startswith("${REDIS_IMAGE:-"), redis["image"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", image), image
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"]) and "ping" in redis["healthcheck"]["test"]
    assert redis.get("restart") in ("always", "unless-stopped")
    assert "ports" not in redis, "Redis is for the api and the workers only: do not publish it on the host"


def test_redis_persists_the_queue(base):
    """Accepted jobs survive a Redis restart: an append-only file on a named volume (tests/reliability shows a
    job accepted before a restart finishing after it)."""
    redis = base["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume = next(v for v in redis["volumes"] if (v["target"] if isinstance(v, dict) else v.split(":")[1]) == "/data")
    name = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
    assert name in base["volumes"], "a named volume, so that the data outlives the container"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_share_one_image(base, name):
    service = base["services"][name]
    assert service["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert "/whl/cpu" in service["build"]["args"]["TORCH_INDEX_URL"], "CPU PyTorch by default"
    assert service["image"] == base["services"]["api"]["image"]
    assert service["command"] == [name]  # docker/entrypoint.sh's roles


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_services_wait_for_redis_and_restart(base, name):
    service = base["services"][name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert service["environment"]["CHECKPOINT_DIR"] == CHECKPOINT_MOUNT
    assert service["restart"] in ("always", "unless-stopped", "on-failure")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_checkpoints_are_mounted_read_only(base, name):
    mounts = [
        v
        for v in base["services"][name]["volumes"]
        if (v.get("target") if isinstance(v, dict) else v.split(":")[1]) == CHECKPOINT_MOUNT
    ]
    assert len(mounts) == 1, base["services"][name]["volumes"]
    mount = mounts[0]
    if isinstance(mount, dict):
        assert mount["read_only"] is True
        source = mount["source"]
    else:
        assert mount.split(":")[2:] and "ro" in mount.split(":")[2].split(","), mount
        source = mount.split(":")[0]
    assert (ROOT / interpolate(source)).is_dir()


def test_workers_run_several_jobs_at_once_so_generation_batches(base):
    """Slots let concurrent generation jobs share a model's sampling engine (docs/SERVICE.md); one slot would run
    the stack's requests one at a time per worker."""
    slots = int(interpolate(base["services"]["worker"]["environment"]["WORKER_SLOTS"]))
    assert slots >= 4


def test_api(base):
    api = base["services"]["api"]
    assert interpolate(api["ports"]) == ["8000:8000"]
    assert api["environment"]["HOST"] == "0.0.0.0"
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "api" and test[-2].endswith("healthcheck.py")


def test_worker_scales(base):
    worker = base["services"]["worker"]
    assert "container_name" not in worker, "`docker compose up --scale worker=N` needs generated names"
    assert "ports" not in worker, "published ports would clash between replicas"
    assert "hostname" not in worker, "each replica registers in Redis under its own hostname"
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "worker" and test[-2].endswith("healthcheck.py")


def test_worker_grace_period_outlasts_a_job(base):
    """`docker compose stop` sends SIGTERM; the worker finishes its job (RQ's warm shutdown) unless Docker's
    SIGKILL comes first: the grace period must outlast the longest job (JOB_TIMEOUT_S)."""
    from app.settings import Settings

    job_timeout = Settings.model_fields["job_timeout_s"].default
    assert seconds(base["services"]["worker"]["stop_grace_period"]) > job_timeout


def test_healthcheck_script_exists_in_the_image():
    """The compose health checks call the script the Dockerfile copies in."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^COPY .*docker/healthcheck\.py /usr/local/lib/vrnn/healthcheck\.py$", dockerfile, re.M)


def test_gpu_override(gpu, merged):
    assert set(gpu["services"]) == {"worker"}, "only the workers run models; the API stays on the CPU image"
    worker = gpu["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    # Device IDs, not an interpolated count: Compose v1 reads `count: ${VAR:-1}` as the string "1" and refuses it.
    assert "count" not in devices[0] and interpolate(devices[0]["device_ids"]) == ["0"]
    assert re.search(r"/whl/cu\d+", interpolate(worker["build"]["args"]["TORCH_INDEX_URL"]))
    assert interpolate(worker["image"]) != interpolate(merged["services"]["api"]["image"]), "a separate CUDA tag"
    # The merge keeps everything else of the worker (read-only checkpoints, health check, Redis).
    m = merged["services"]["worker"]
    assert m["healthcheck"] and m["depends_on"]["redis"]["condition"] == "service_healthy"
    assert m["build"]["dockerfile"] == "docker/Dockerfile"
    assert "container_name" not in m
