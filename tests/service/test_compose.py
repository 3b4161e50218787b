"""docker-compose.yml validates and keeps the worker hardening (client only; no engine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="docker compose (client plugin) not installed")
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"GRADER_SECRET_KEY": "test-secret", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_and_worker_hardening() -> None:
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"api", "worker", "worker-gpu", "redis", "postgres", "migrate"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert worker["read_only"] is True and worker["tmpfs"]
        assert worker["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in worker["security_opt"]
        assert worker["pids_limit"] and worker["mem_limit"]
        assert worker["networks"] == ["backend"]
    assert spec["networks"]["backend"]["internal"] is True
    for name in ("api", "redis", "postgres"):
        assert "healthcheck" in services[name]
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "\nUSER grader" in dockerfile and "whl/cpu" in dockerfile
