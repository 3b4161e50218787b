"""`grader evaluate` as a student or instructor runs it: a subprocess, JSON out, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from grader.config import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "facial_keypoints"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # One data dir for the module, so the demo test set is generated and cached once.
    data_dir = tmp_path_factory.mktemp("grader-data")
    return {**os.environ, "GRADER_DATA_DIR": str(data_dir)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["grader", "evaluate", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_reference_model_passes_the_demo(env: dict[str, str]) -> None:
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "PASSED" and report["passed"] is True
    assert report["score"] >= report["threshold"] == 100.0
    assert report["n_images"] == 1000
    assert len(report["per_keypoint_rmse_px"]) == 15
    assert report["seconds"] > 0


def test_one_evaluation_may_use_every_core(env: dict[str, str]) -> None:
    """A worker splits the cores between its grading processes; `grader evaluate` grades one
    model at a time, so its plans may use them all (unless GRADER_SANDBOX_THREADS says)."""
    cores = len(os.sched_getaffinity(0))
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--json")
    assert result.returncode == 0, result.stderr
    trials = json.loads(result.stdout)["trials"]
    assert max(t["threads"] for t in trials) == cores, trials
    pinned = run({**env, "GRADER_SANDBOX_THREADS": "1"}, str(EXAMPLES / "reference_model.pt"),
                 "--json")
    assert {t["threads"] for t in json.loads(pinned.stdout)["trials"]} == {1}


def test_dummy_model_fails_the_demo(env: dict[str, str]) -> None:
    result = run(env, str(EXAMPLES / "dummy_model.pt"), "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "FAILED" and report["passed"] is False
    assert 0 < report["score"] < 100


def test_threshold_option_decides_the_pass(env: dict[str, str]) -> None:
    result = run(env, str(EXAMPLES / "dummy_model.pt"), "--json", "--threshold", "0.001")
    assert result.returncode == 0
    assert json.loads(result.stdout)["passed"] is True


def test_human_output(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--no-sandbox")
    assert result.returncode == 0
    assert result.stdout.startswith("PASSED: score ")
    assert "nose_tip" in result.stdout


def test_named_failure_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    result = run(env, str(bad), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "LOAD_ERROR" and report["score"] == 0.0
    assert "torch.jit.script" in report["failure_message"]


def test_malformed_test_set_exits_2_without_traceback(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("left_eye_center_x,Image\n1.0,1 2 3\n")
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--test-set", str(bad), "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing column" in lines[0] and "bad.csv" in lines[0]


def test_missing_model_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, str(tmp_path / "absent.pt"), "--json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "not found" in result.stderr


def test_explicit_test_set(env: dict[str, str], small_csv: Path) -> None:
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--test-set", str(small_csv), "--json")
    assert json.loads(result.stdout)["n_images"] == 64


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_cpu_machine_exits_2(env: dict[str, str]) -> None:
    result = run(env, str(EXAMPLES / "reference_model.pt"), "--device", "cuda", "--json")
    assert result.returncode == 2
    assert "CUDA" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["evaluate", "x.pt"], ["worker"], ["serve"], ["migrate"]])
def test_invalid_settings_exit_2_naming_the_variable(
    env: dict[str, str], command: list[str]
) -> None:
    bad = {**env, "GRADER_DEVICE": "tpu", "GRADER_WORKER_CONCURRENCY": "-1"}
    result = subprocess.run(
        ["grader", *command], capture_output=True, text=True, env=bad, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "GRADER_DEVICE='tpu'" in result.stderr
    assert "GRADER_WORKER_CONCURRENCY='-1'" in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["users", "list"]])
def test_short_admin_password_exits_2_naming_the_variable(
    env: dict[str, str], command: list[str]
) -> None:
    # Shorter than the password policy: the first start used to create the admin with it and
    # stop half-way with a traceback.
    bad = {**env, "GRADER_ADMIN_PASSWORD": "shorty1"}
    result = subprocess.run(
        ["grader", *command], capture_output=True, text=True, env=bad, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "GRADER_ADMIN_PASSWORD" in line]
    assert "at least 8 characters" in line
    assert "shorty1" not in result.stderr  # a secret is never echoed


def test_empty_admin_password_means_generate_one() -> None:
    assert Settings(admin_password="").admin_password is None
    assert Settings(admin_password="long-enough").admin_password == "long-enough"
