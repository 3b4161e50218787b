"""`grader doctor` reports real layers; `grader evaluate` grades hostile models in the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from grader.grading.sandboxed.confine import landlock_abi
from tests.sandbox import hostile_models as hm


def _grader(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    return subprocess.run(
        ["grader", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_doctor_reports_every_layer() -> None:
    result = _grader("doctor", "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)
    assert layers["fork_server"]["active"] is True
    assert layers["rlimits"]["active"] is True
    assert layers["landlock"]["active"] is (landlock_abi() > 0)
    assert set(layers) == {"fork_server", "rlimits", "uid_drop", "netns", "no_new_privs",
                           "landlock"}


@pytest.fixture(scope="module")
def small_test_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("testset") / "test.csv"
    result = _grader("dataset", "synth", "--split", "test", "--count", "16", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def _evaluate(model: Path, test_set: Path) -> dict[str, object]:
    result = _grader("evaluate", str(model), "--test-set", str(test_set), "--json")
    assert result.stdout, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def _secret_labels(tmp_path: Path, n: int) -> hm.SecretReader:
    # Labels of the test set's own size, readable by everyone: only the sandbox protects them.
    secret = tmp_path / "hidden_labels.bin"
    secret.write_bytes(np.random.default_rng(1).uniform(-1, 1, (n, 15, 2)).astype("<f4").tobytes())
    os.chmod(tmp_path, 0o755)
    secret.chmod(0o644)
    return hm.SecretReader(str(secret), n)


# The list, each as `grader evaluate` names it; (build, expected status, extra args).
EVALUATE_CASES: dict[str, tuple[Callable[[Path], Path], str, tuple[str, ...]]] = {
    "reads_a_planted_secret": (
        lambda d: hm.save_scripted(_secret_labels(d, 16), d / "m.pt"), "SANDBOX_VIOLATION", ()
    ),
    "writes_a_file": (
        lambda d: hm.save_scripted(hm.Writer(str(d / "written.txt")), d / "m.pt"),
        "SANDBOX_VIOLATION", (),
    ),
    "writes_at_load_time": (
        lambda d: hm.save_scripted(hm.LoadTimeWriter(str(d / "written.txt")), d / "m.pt"),
        "SANDBOX_VIOLATION", (),
    ),
    "endless_loop": (
        lambda d: hm.save_scripted(hm.Endless(), d / "m.pt"), "TIMEOUT", ("--time-limit", "3")
    ),
    "allocates_past_the_cap": (
        lambda d: hm.save_scripted(hm.HugeAllocation(), d / "m.pt"), "MEMORY_LIMIT", ()
    ),
    "nan_output": (lambda d: hm.save_scripted(hm.NaNOutput(), d / "m.pt"), "NON_FINITE", ()),
    "wrong_shape": (lambda d: hm.save_scripted(hm.WrongShape(), d / "m.pt"), "BAD_OUTPUT", ()),
    "integer_output": (
        lambda d: hm.save_scripted(hm.IntegerOutput(), d / "m.pt"), "BAD_OUTPUT", ()
    ),
    **{
        name: (lambda d, write=write: _written(write, d / "m.pt"), "LOAD_ERROR", ())
        for name, write in [
            ("plain_pickle", hm.write_pickle), ("random_bytes", hm.write_random_bytes),
            ("empty_file", hm.write_empty), ("zip_bomb", hm.write_zip_bomb),
        ]
    },
    "over_the_size_limit": (
        lambda d: hm.save_scripted(hm.Honest(), d / "m.pt"),
        "TOO_LARGE", ("--max-model-mb", "0.001"),
    ),
}


def _written(write: Callable[[Path], None], path: Path) -> Path:
    write(path)
    return path


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_names_every_hostile_model(
    tmp_path: Path, small_test_set: Path, case: str
) -> None:
    os.chmod(tmp_path, 0o777)  # even a world-writable directory stays unwritten
    build, expected, extra = EVALUATE_CASES[case]
    started = time.monotonic()
    result = _grader("evaluate", str(build(tmp_path)), "--test-set", str(small_test_set),
                     "--json", *extra)  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 1, (result.stderr, report)
    assert report["status"] == expected, report
    assert report["passed"] is False and report["score"] == 0.0
    assert report["failure_message"]
    assert not (tmp_path / "written.txt").exists()
    if expected == "TIMEOUT":
        assert time.monotonic() - started < 60


def test_evaluate_grades_an_honest_model(tmp_path: Path, small_test_set: Path) -> None:
    honest = _evaluate(hm.save_scripted(hm.Honest(), tmp_path / "h.pt"), small_test_set)
    assert honest["status"] in ("PASSED", "FAILED")
    assert isinstance(honest["score"], float) and honest["score"] > 0


def _no_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA works here; these cover a GPU worker on a machine without one")


def test_evaluate_on_an_unusable_device_is_our_failure_not_the_model(
    tmp_path: Path, small_test_set: Path
) -> None:
    _no_cuda()
    model = hm.save_scripted(hm.Honest(), tmp_path / "h.pt")
    # As a misconfigured GPU worker grades: the device comes from its settings, not a flag.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    result = subprocess.run(
        ["grader", "evaluate", str(model), "--test-set", str(small_test_set), "--json"],
        capture_output=True, text=True, timeout=300, env={**env, "GRADER_DEVICE": "cuda"},
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 3, report
    assert report["status"] == "INFRA_ERROR"
    assert "device 'cuda' unusable in the sandbox" in str(report["failure_message"])


@pytest.mark.parametrize("command", [["worker", "--queues", "gpu"], ["serve"], ["doctor"]])
def test_commands_refuse_a_device_they_cannot_grade_on(
    tmp_path: Path, command: list[str]
) -> None:
    """A GPU worker without a usable GPU would fail every grading: it does not start."""
    _no_cuda()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    env.update(GRADER_DATA_DIR=str(tmp_path), GRADER_DEVICE="cuda")
    args = ["doctor", "--device", "cuda"] if command == ["doctor"] else command
    result = subprocess.run(
        ["grader", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    if command == ["doctor"]:
        assert "OFF cuda" in result.stdout
    else:
        assert "GRADER_DEVICE=cuda cannot be used for grading here" in result.stderr
        assert list(tmp_path.iterdir()) == []  # refused before anything started
