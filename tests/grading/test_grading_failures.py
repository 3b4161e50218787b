"""Every way a student's file can go wrong becomes a named outcome, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from grader.config import Settings
from grader.grading.engine import GradingOutcome, grade_model_file
from grader.grading.failures import FailureKind
from grader.grading.testdata.testsets import TestSet

from .archs import MLP, build, export

LIMIT = 20 * 2**20


def grade(path: Path, test_set: TestSet, settings: Settings, **kw: object) -> GradingOutcome:
    args: dict = {"threshold": 100.0, "max_model_bytes": LIMIT, "settings": settings, **kw}
    return grade_model_file(path, test_set, **args)


def assert_failed(outcome: GradingOutcome, kind: FailureKind) -> None:
    assert outcome.status == kind.value
    assert outcome.failure_kind is kind
    assert outcome.score == 0.0 and outcome.passed is False
    json.dumps(outcome.to_dict())  # always JSON-able


class WrongCount(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 29)


class IntOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 30, dtype=torch.int64)


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("student bug: forgot to flatten")
        return x


class NaNOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 30), float("nan"))


class InfSometimes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 30) / x.mean(dim=(1, 2, 3)).lt(0.0).float().unsqueeze(1)


class TupleOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(x.shape[0], 30), x


@pytest.mark.parametrize("what", ["whole_model", "state_dict"])
def test_torch_save_pickle_is_load_error(
    what: str, small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    model = MLP()
    torch.save(model if what == "whole_model" else model.state_dict(), path)
    outcome = grade(path, small_test_set, settings)
    assert_failed(outcome, FailureKind.LOAD_ERROR)
    assert "torch.save" in (outcome.failure_message or "")
    assert "torch.jit.script" in (outcome.failure_message or "")


def test_garbage_file_is_load_error(
    small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"definitely not a model" * 10)
    outcome = grade(path, small_test_set, settings)
    assert_failed(outcome, FailureKind.LOAD_ERROR)
    assert "torch.jit.trace" in (outcome.failure_message or "")


def test_too_large_is_checked_before_loading(
    small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    # Garbage would be LOAD_ERROR if it were loaded; TOO_LARGE proves it never was.
    path = tmp_path / "model.pt"
    path.write_bytes(b"x" * 5000)
    outcome = grade(path, small_test_set, settings, max_model_bytes=4999)
    assert_failed(outcome, FailureKind.TOO_LARGE)
    assert "limit" in (outcome.failure_message or "")
    assert "load" not in outcome.timings and "predict" not in outcome.timings


def test_exactly_at_the_limit_is_accepted(
    small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    path = export(build("mlp"), tmp_path / "model.pt")
    outcome = grade(path, small_test_set, settings, max_model_bytes=path.stat().st_size)
    assert outcome.failure_kind is None and outcome.status == "FAILED"


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (WrongCount(), "29 values"),
        (IntOutput(), "torch.int64"),
        (Raises(), "student bug: forgot to flatten"),
        (TupleOutput(), "tuple"),
    ],
    ids=["wrong_count", "int_dtype", "raises", "tuple"],
)
@pytest.mark.parametrize("sandbox_enabled", [False, True], ids=["in_process", "sandbox"])
def test_bad_output(
    module: nn.Module,
    needle: str,
    sandbox_enabled: bool,
    small_test_set: TestSet,
    tmp_path: Path,
) -> None:
    path = export(module, tmp_path / "model.pt")
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=sandbox_enabled)
    outcome = grade(path, small_test_set, settings)
    assert_failed(outcome, FailureKind.BAD_OUTPUT)
    assert needle in (outcome.failure_message or "")


@pytest.mark.parametrize("module", [NaNOutput(), InfSometimes()], ids=["nan", "inf"])
def test_non_finite_scores_zero(
    module: nn.Module, small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    path = export(module, tmp_path / "model.pt")
    outcome = grade(path, small_test_set, settings)
    assert_failed(outcome, FailureKind.NON_FINITE)
    assert "image 1" in (outcome.failure_message or "")


def test_missing_file_is_an_outcome_not_an_exception(
    small_test_set: TestSet, settings: Settings, tmp_path: Path
) -> None:
    outcome = grade(tmp_path / "absent.pt", small_test_set, settings)
    assert outcome.passed is False and outcome.score == 0.0
    assert outcome.failure_kind is FailureKind.INFRA_ERROR


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_is_infra_error_not_load_error(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export(build("mlp"), tmp_path / "model.pt")
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=False, device="cuda")
    outcome = grade(path, small_test_set, settings)
    assert outcome.failure_kind is FailureKind.INFRA_ERROR
    assert "CUDA is not available" in (outcome.failure_message or "")
