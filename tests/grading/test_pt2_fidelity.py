"""torch.export programs (.pt2) are graded like the course's loop on
`torch.export.load(f).module()` (without its `.eval()`, which the module refuses): every zoo
architecture below, exported with a dynamic batch and with a fixed batch of 1, gets the
course's predictions and score to 1e-5, at batch sizes the program accepts. A program exported
in training mode, or one that answers differently twice, is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grader.config import Settings
from grader.grading.archive import PT2, check_model_archive
from grader.grading.engine import grade_model_file
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import get_kind
from grader.grading.plans import Plan, PlanHint
from grader.grading.sandboxed.exported import Exported
from grader.grading.sandboxed.predict import load_model, predict_with_plan
from grader.grading.testdata.testsets import TestSet
from tests.support.course import course_predictions, course_score
from tests.support.zoo import build, export, export_program

ARCHITECTURES = [
    "tiny_cnn", "bn_cnn_fc1024", "dropout2d_cnn", "prelu_per_channel", "residual_small",
    "returns_15x2", "view_minus1", "layernorm_gelu",
]
NO_COMPILE = [Plan("compiled", 1, 1), Plan("compiled", 8, 1)]  # compiled: its own test


@pytest.mark.parametrize("batch", [None, 1], ids=["dynamic", "batch1"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_program_gets_the_course_score(
    name: str, batch: int | None, small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export_program(name, tmp_path / f"{name}.pt2", batch=batch)
    assert check_model_archive(path, max_bytes=20 * 2**20) == PT2
    expected = course_predictions(path, small_test_set).numpy()
    expected_score = course_score(path, small_test_set)
    model = load_model(path, device="cpu")
    assert isinstance(model, Exported)
    assert (model.min_batch, model.max_batch) == ((1, 1) if batch else (1, 1024))
    predictions, report = predict_with_plan(
        model, small_test_set.images, device="cpu", max_batch=32, threads=2,
        tuning_share=1e9, avoid=NO_COMPILE,
    )
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)
    score = get_kind("keypoints").score(predictions, small_test_set.labels, threshold=100).score
    assert abs(score - expected_score) <= 1e-5 * expected_score
    tried = {t.plan.batch_size for t in report.trials}
    if batch == 1:  # graded at the batch it was exported for, nothing larger is tried
        assert report.plan.batch_size == 1 and tried <= {1}
    else:
        assert max(tried) > 1


def test_the_same_model_scores_the_same_in_both_formats(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", sandbox_enabled=False)
    scores = []
    for path in (export("bn_cnn_fc1024", tmp_path / "m.pt"),
                 export_program("bn_cnn_fc1024", tmp_path / "m.pt2")):
        outcome = grade_model_file(
            path, small_test_set, threshold=1.0, max_model_bytes=20 * 2**20, settings=settings
        )
        assert outcome.failure_kind is None, outcome.failure_message
        scores.append(outcome.score)
    assert abs(scores[0] - scores[1]) <= 1e-5 * scores[0]


def test_a_program_with_a_fixed_batch_above_one_is_padded(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    """Exported at batch 4 only: each image is run in a batch of 4 (copies of itself), which
    gives the course's predictions for a model that does not mix the images of a batch."""
    path = export_program("tiny_cnn", tmp_path / "b4.pt2", batch=4)
    reference = build("tiny_cnn")
    with torch.no_grad():
        expected = reference(torch.tensor(small_test_set.images / 255, dtype=torch.float32)
                             .unsqueeze(1)).view(-1, 15, 2).numpy()
    model = load_model(path, device="cpu")
    assert (model.min_batch, model.max_batch) == (4, 4)
    predictions, report = predict_with_plan(
        model, small_test_set.images, device="cpu", max_batch=32, threads=1, avoid=NO_COMPILE,
    )
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)
    assert report.plan.batch_size <= 4


def test_batch1_only_model_exports_at_batch_one_and_is_graded_so(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export_program("batch1_only", tmp_path / "b1.pt2", batch=1)
    expected = course_predictions(path, small_test_set).numpy()
    predictions, report = predict_with_plan(
        load_model(path, device="cpu"), small_test_set.images, device="cpu", max_batch=32,
        threads=1, tuning_share=1e9, avoid=NO_COMPILE,
    )
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)
    assert report.plan.batch_size == 1


@pytest.mark.parametrize("name", ["dropout2d_cnn", "bn_cnn_fc1024"])
def test_a_program_exported_in_training_mode_is_refused(
    name: str, small_test_set: TestSet, tmp_path: Path
) -> None:
    path = export_program(name, tmp_path / "train.pt2", train=True)
    with pytest.raises(GradingFailure) as caught:
        load_model(path, device="cpu")
    assert caught.value.kind is FailureKind.BAD_OUTPUT
    assert "training mode" in caught.value.detail and "model.eval()" in caught.value.detail
    outcome = grade_model_file(
        path, small_test_set, threshold=1.0, max_model_bytes=20 * 2**20,
        settings=Settings(data_dir=tmp_path / "data", sandbox_enabled=False),
    )
    assert outcome.failure_kind is FailureKind.BAD_OUTPUT and outcome.score == 0


class _Noisy(torch.nn.Module):
    """Random noise in eval mode, which no graph check names: two runs differ."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(9216, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + torch.rand(x.shape[0], 30)


def test_a_program_that_answers_differently_twice_is_refused(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    program = torch.export.export(_Noisy().eval(), (torch.zeros(1, 1, 96, 96),))
    torch.export.save(program, str(tmp_path / "noisy.pt2"))
    with pytest.raises(GradingFailure) as caught:
        predict_with_plan(
            load_model(tmp_path / "noisy.pt2", device="cpu"), small_test_set.images[:8],
            device="cpu", max_batch=8, threads=1,
        )
    assert caught.value.kind is FailureKind.BAD_OUTPUT
    assert "different predictions" in caught.value.detail


@pytest.mark.slow
def test_the_compiled_plan_gives_the_course_predictions(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    """torch.compile (inductor) of the program, outside the sandbox (inside, it has no
    compiler: see docs/security.md)."""
    path = export_program("tiny_cnn", tmp_path / "tiny.pt2")
    expected = course_predictions(path, small_test_set).numpy()
    hint = Plan("compiled", 8, 1)
    predictions, report = predict_with_plan(
        load_model(path, device="cpu"), small_test_set.images, device="cpu", max_batch=32,
        threads=1, hint=PlanHint(hint),
    )
    assert report.plan == hint, [t.to_dict() for t in report.trials]
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [None, 1], ids=["dynamic", "batch1"])
def test_preflight_tells_a_batch_one_program(batch: int | None, tmp_path: Path) -> None:
    from grader.grading.engine import preflight_model_file

    path = export_program("tiny_cnn", tmp_path / "m.pt2", batch=batch)
    outcome = preflight_model_file(
        path, max_model_bytes=20 * 2**20, time_limit_s=60,
        settings=Settings(data_dir=tmp_path / "data", sandbox_enabled=False),
    )
    assert outcome.status == "PASSED", outcome.message
    assert outcome.batch_one_only is (batch == 1)
