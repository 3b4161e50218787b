"""Hostile models end with their named failure, and the sandbox keeps working after each."""

from __future__ import annotations

import os
import signal
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading import sandbox
from grader.grading.failures import FailureKind, GradingFailure
from tests.sandbox import hostile_models as hm

pytestmark = pytest.mark.usefixtures("honest_still_works")
Run = Callable[..., np.ndarray]


def _failure(run: Run, model: Path, **kwargs: object) -> GradingFailure:
    with pytest.raises(GradingFailure) as info:
        run(model, **kwargs)
    return info.value


def test_honest_model_matches_in_process_predictions(
    run_sandboxed: Run, honest_model: Path, honest_reference: np.ndarray
) -> None:
    np.testing.assert_array_equal(run_sandboxed(honest_model), honest_reference)
    assert sandbox.get_sandbox().last_timings["fork_ms"] < 1000


def test_reading_a_planted_secret_is_a_violation_and_never_scores(
    run_sandboxed: Run, tmp_path: Path, images: np.ndarray
) -> None:
    labels = np.random.default_rng(1).uniform(-1, 1, (len(images), 15, 2)).astype(np.float32)
    secret = tmp_path / "hidden_labels.bin"
    secret.write_bytes(labels.tobytes())
    os.chmod(tmp_path, 0o755)
    secret.chmod(0o644)  # readable by everyone: only the sandbox stands in the way
    model = hm.save_scripted(hm.SecretReader(str(secret), len(images)), tmp_path / "m.pt")
    # Outside the sandbox this model really does return the labels: the test is meaningful.
    in_process = torch.jit.load(str(model))(torch.zeros(len(images), 1, 96, 96))
    np.testing.assert_array_equal(in_process.numpy().reshape(-1, 15, 2), labels)

    failure = _failure(run_sandboxed, model)
    assert failure.kind == FailureKind.SANDBOX_VIOLATION
    assert "from_file" in failure.detail


def test_writing_a_file_is_a_violation_and_nothing_is_written(
    run_sandboxed: Run, tmp_path: Path
) -> None:
    target = tmp_path / "overwritten.db"
    os.chmod(tmp_path, 0o777)  # even a world-writable directory stays unwritten
    model = hm.save_scripted(hm.Writer(str(target)), tmp_path / "m.pt")
    failure = _failure(run_sandboxed, model)
    assert failure.kind == FailureKind.SANDBOX_VIOLATION
    assert "aten::save" in failure.detail
    assert not target.exists()


def test_writing_at_load_time_is_a_violation(run_sandboxed: Run, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    os.chmod(tmp_path, 0o777)
    scripted = torch.jit.script(hm.LoadTimeWriter(str(target)))
    scripted.save(str(tmp_path / "m.pt"))
    target.unlink(missing_ok=True)
    torch.jit.load(str(tmp_path / "m.pt"))  # outside the sandbox, loading alone writes it
    assert target.exists()
    target.unlink()

    failure = _failure(run_sandboxed, tmp_path / "m.pt")
    assert failure.kind == FailureKind.SANDBOX_VIOLATION
    assert not target.exists()


def test_endless_loop_times_out(run_sandboxed: Run, tmp_path: Path) -> None:
    model = hm.save_scripted(hm.Endless(), tmp_path / "m.pt")
    started = time.monotonic()
    failure = _failure(run_sandboxed, model, time_limit_s=3.0)
    elapsed = time.monotonic() - started
    assert failure.kind == FailureKind.TIMEOUT
    assert 3.0 <= elapsed < 10.0


def test_allocating_past_the_cap_is_a_memory_limit(run_sandboxed: Run, tmp_path: Path) -> None:
    model = hm.save_scripted(hm.MemoryHog(), tmp_path / "m.pt")
    failure = _failure(run_sandboxed, model, memory_limit_bytes=1024**3)
    assert failure.kind == FailureKind.MEMORY_LIMIT


def test_nan_predictions_come_back_intact(run_sandboxed: Run, tmp_path: Path) -> None:
    model = hm.save_scripted(hm.NaNOutput(), tmp_path / "m.pt")
    predictions = run_sandboxed(model)
    assert predictions.shape == (16, 15, 2)
    assert np.isnan(predictions).all()  # the trusted scorer turns this into NON_FINITE


@pytest.mark.parametrize("module", [hm.WrongShape(), hm.IntegerOutput()], ids=type)
def test_bad_outputs(run_sandboxed: Run, tmp_path: Path, module: torch.nn.Module) -> None:
    failure = _failure(run_sandboxed, hm.save_scripted(module, tmp_path / "m.pt"))
    assert failure.kind == FailureKind.BAD_OUTPUT


def _torchscript_layout_with_junk(path: Path) -> None:
    # Entry names without the UTF-8 flag make zipfile reach for the cp437 codec, which the
    # confined child can only use if the fork server imported it beforehand.
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("data.pkl", "constants.pkl", "code/__torch__.py", "version"):
            archive.writestr(f"archive/{name}", b"junk")


@pytest.mark.parametrize(
    "make",
    [hm.write_pickle, hm.write_state_dict, hm.write_random_bytes, hm.write_empty,
     hm.write_zip_bomb, _torchscript_layout_with_junk],
    ids=lambda f: f.__name__,
)
def test_files_that_are_not_torchscript(
    run_sandboxed: Run, tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "m.pt"
    make(path)
    assert _failure(run_sandboxed, path).kind == FailureKind.LOAD_ERROR


def test_child_killed_by_a_signal_is_crashed(run_sandboxed: Run, tmp_path: Path) -> None:
    model = hm.save_scripted(hm.Endless(), tmp_path / "m.pt")
    box = sandbox.get_sandbox()
    outcome: list[BaseException] = []

    def grade() -> None:
        try:
            run_sandboxed(model, time_limit_s=30.0)
        except BaseException as exc:  # noqa: B036 - the thread hands its result over
            outcome.append(exc)

    thread = threading.Thread(target=grade)
    thread.start()
    deadline = time.monotonic() + 20
    while box.current_child_pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert box.current_child_pid is not None
    time.sleep(0.5)  # let it get into the loop: a segfault in torch looks exactly like this
    os.kill(box.current_child_pid, signal.SIGSEGV)
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], GradingFailure)
    assert outcome[0].kind == FailureKind.CRASHED
    assert "SIGSEGV" in outcome[0].detail


def test_a_dead_fork_server_is_restarted(
    run_sandboxed: Run, honest_model: Path, honest_reference: np.ndarray
) -> None:
    run_sandboxed(honest_model)
    box = sandbox.get_sandbox()
    assert box._proc is not None
    box._proc.kill()
    box._proc.wait()
    np.testing.assert_array_equal(run_sandboxed(honest_model), honest_reference)
