"""Hostile torch.export archives (.pt2): the structural check refuses each with its reason
before torch sees the file, and the sandbox contains those sent straight to it (as if the
check had a hole). An honest program is graded exactly, and the sandbox keeps working."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading.archive import PT2, check_model_archive
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.sandboxed.predict import load_model
from tests.sandbox import hostile_pt2 as hp
from tests.sandbox.conftest import in_process_predictions

pytestmark = pytest.mark.usefixtures("honest_still_works")
Run = Callable[..., np.ndarray]
MAX = 20 * 1024 * 1024


@torch.library.custom_op("grader_hostile::identity", mutates_args=())
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_identity.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _CustomOp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.grader_hostile.identity(x.flatten(1)[:, :30])


@pytest.fixture(scope="module")
def honest_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hp.save_program(hp.Honest(), tmp_path_factory.mktemp("pt2") / "honest.pt2")


def _refused(path: Path) -> str:
    with pytest.raises(GradingFailure) as info:
        check_model_archive(path, max_bytes=MAX)
    assert info.value.kind == FailureKind.LOAD_ERROR, info.value
    return info.value.detail


def _contained(run: Run, path: Path) -> GradingFailure:
    with pytest.raises(GradingFailure) as info:
        run(path)
    assert info.value.kind != FailureKind.INFRA_ERROR, info.value
    return info.value


def test_an_honest_program_passes_and_is_graded_exactly(
    run_sandboxed: Run, honest_program: Path, images: np.ndarray
) -> None:
    assert check_model_archive(honest_program, max_bytes=MAX) == PT2
    expected = in_process_predictions(honest_program, images)
    np.testing.assert_array_equal(run_sandboxed(honest_program), expected)


@pytest.mark.parametrize("target", [
    "torch.ops.aten.from_file.default", "torch.ops.aten.save.default", "torch.load",
    "torch.from_file", "builtins.eval", "torch.ops.grader_hostile.identity.default",
    "#custom:op",
])
def test_operators_outside_aten_or_touching_files_are_refused(
    honest_program: Path, tmp_path: Path, target: str
) -> None:
    path = hp.rewrite(honest_program, tmp_path / "m.pt2", hp.retarget(target))
    assert target[:20] in _refused(path)


def test_a_custom_operator_is_refused_and_cannot_load_in_the_sandbox(
    run_sandboxed: Run, tmp_path: Path
) -> None:
    path = hp.save_program(_CustomOp(), tmp_path / "custom.pt2")
    assert "grader_hostile" in _refused(path)
    # The sandbox's torch has no such operator: a load error, not a grade.
    assert _contained(run_sandboxed, path).kind == FailureKind.LOAD_ERROR


def test_a_file_reading_operator_is_refused_and_contained(
    run_sandboxed: Run, honest_program: Path, tmp_path: Path
) -> None:
    path = hp.rewrite(honest_program, tmp_path / "m.pt2",
                      hp.retarget("torch.ops.aten.from_file.default"))
    assert "read or write files" in _refused(path)
    failure = _contained(run_sandboxed, path)
    assert failure.kind in (FailureKind.LOAD_ERROR, FailureKind.SANDBOX_VIOLATION)


@pytest.mark.parametrize("make", [hp.pickled_sample_inputs, hp.pickled_weight, hp.sympy_payload],
                         ids=["sample_inputs_pickle", "weight_pickle", "sympify_eval"])
def test_code_hidden_in_the_archive_is_refused_and_never_runs(
    run_sandboxed: Run, honest_program: Path, tmp_path: Path,
    make: Callable[[Path], hp.Edit],
) -> None:
    marker = tmp_path / "pwned"
    tmp_path.chmod(0o777)  # writable by anyone: only the check and the sandbox stand in the way
    path = hp.rewrite(honest_program, tmp_path / "m.pt2", make(marker))
    _refused(path)
    _contained(run_sandboxed, path)
    assert not marker.exists()


def test_sample_inputs_pickle_is_refused_by_torch_too_outside_the_sandbox(
    honest_program: Path, tmp_path: Path
) -> None:
    """The child forces torch's safe unpickler: even unconfined the command does not run."""
    marker = tmp_path / "pwned"
    path = hp.rewrite(honest_program, tmp_path / "m.pt2", hp.pickled_sample_inputs(marker))
    with pytest.raises(GradingFailure) as info:
        load_model(path, device="cpu")
    assert info.value.kind == FailureKind.LOAD_ERROR
    assert not marker.exists()


@pytest.mark.parametrize("edit", [hp.huge_declared_weight, hp.extra_entry],
                         ids=["huge_declared_weight", "extra_entry"])
def test_malformed_payloads(
    run_sandboxed: Run, honest_program: Path, tmp_path: Path, edit: hp.Edit
) -> None:
    path = hp.rewrite(honest_program, tmp_path / "m.pt2", edit)
    if edit is hp.extra_entry:
        # Harmless to torch (an "extra file"), but nothing a program needs: refused.
        assert "unexpected entry" in _refused(path)
        return
    check_model_archive(path, max_bytes=MAX)  # well-formed; torch refuses its sizes
    assert _contained(run_sandboxed, path).kind == FailureKind.LOAD_ERROR


def test_a_pt2_zip_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt2"
    hp.write_pt2_bomb(path)
    assert "zip bomb" in _refused(path)


def test_a_huge_constant_is_too_large(tmp_path: Path) -> None:
    path = hp.save_program(hp.BigConstant(), tmp_path / "big.pt2")
    with pytest.raises(GradingFailure) as info:
        check_model_archive(path, max_bytes=MAX)
    assert info.value.kind == FailureKind.TOO_LARGE


def test_a_huge_allocation_is_a_memory_limit(run_sandboxed: Run, tmp_path: Path) -> None:
    path = hp.save_program(hp.HugeAllocation(), tmp_path / "alloc.pt2")
    check_model_archive(path, max_bytes=MAX)
    assert _contained(run_sandboxed, path).kind == FailureKind.MEMORY_LIMIT


def test_a_program_from_a_newer_torch_names_both_versions(
    honest_program: Path, tmp_path: Path
) -> None:
    def newer(entries: dict[str, bytes], prefix: str) -> None:
        import json

        program = json.loads(entries[f"{prefix}/models/model.json"])
        program["torch_version"] = "3.1.0"
        program["schema_version"]["major"] += 1
        entries[f"{prefix}/models/model.json"] = json.dumps(program).encode()

    path = hp.rewrite(honest_program, tmp_path / "new.pt2", newer)
    check_model_archive(path, max_bytes=MAX)
    with pytest.raises(GradingFailure) as info:
        load_model(path, device="cpu")
    assert info.value.kind == FailureKind.LOAD_ERROR
    assert "torch 3.1.0" in info.value.detail and f"torch {torch.__version__}" in info.value.detail
