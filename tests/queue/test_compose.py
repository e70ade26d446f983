"""docker-compose.yml validates (``docker-compose config``, Debian's package; no container
engine runs here) and has the services, reservations and settings the deployment needs;
the Dockerfile picks the torch build by argument and runs as a non-root user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    import yaml

    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/install_compose.sh installs "
                    "the Debian package, as scripts/test.sh does)")
    done = subprocess.run([binary, "--env-file", ".env.example", "config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_compose_file_has_the_services_of_the_queued_deployment(compose: dict[str, Any]
                                                                ) -> None:
    services = compose["services"]
    assert set(services) >= {"redis", "worker-gpu", "worker-cpu", "flower"}
    assert all("healthcheck" in s for s in services.values())
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and any(
        str(v).startswith("redis-data:") for v in redis["volumes"])
    gpu, cpu = services["worker-gpu"], services["worker-cpu"]
    assert gpu["command"][:3] == ["worker", "--queues", "extract"]
    assert cpu["command"][:3] == ["worker", "--queues", "cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["TORCH"].startswith("cu") and cpu["build"]["args"]["TORCH"] == "cpu"
    for worker in (gpu, cpu):
        targets = {str(v).split(":")[1] for v in worker["volumes"]}
        assert {"/models", "/data", "/cache"} <= targets
        assert worker["environment"]["AUDITOR_BROKER_URL"].startswith("redis://redis:")
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in services["flower"]["ports"])


def test_compose_has_one_beat_sharing_the_schedules_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    beat = services["beat"]
    assert beat["command"][0] == "beat" and "deploy" not in beat  # one replica, no scaling
    schedules = beat["environment"]["AUDITOR_SCHEDULES"]
    assert schedules.startswith("/data/")
    for name in ("worker-gpu", "worker-cpu"):
        assert services[name]["environment"]["AUDITOR_SCHEDULES"] == schedules
    assert {str(v).split(":")[1] for v in beat["volumes"]} >= {"/data", "/cache"}
    assert beat["depends_on"]["redis"]["condition"] == "service_healthy"


def test_env_example_names_only_settings_auditor_reads() -> None:
    from auditor.settings import ENV

    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.lstrip("# ").strip()
        if line.startswith("AUDITOR_") and "=" in line:
            names.add(line.split("=", 1)[0])
    compose_only = {"AUDITOR_MODELS_HOST", "AUDITOR_DATA_HOST", "AUDITOR_TORCH_GPU",
                    "AUDITOR_CPU_CONCURRENCY"}
    assert set(ENV.values()) <= names
    assert names - compose_only <= set(ENV.values())


def test_dockerfile_builds_cpu_or_cuda_torch_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH=cpu" in text and "download.pytorch.org/whl/${TORCH}" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
