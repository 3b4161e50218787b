from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import get_kind
from grader.grading.kinds.keypoints import MAX_SCORE

score_predictions = get_kind("keypoints").score


def test_score_is_the_course_formula() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(-1, 1, (50, 15, 2)).astype(np.float32)
    pred = (truth + rng.normal(0, 0.05, truth.shape)).astype(np.float32)
    report = score_predictions(pred, truth, threshold=100.0)

    criterion = torch.nn.MSELoss()
    loss = sum(
        criterion(torch.from_numpy(truth[i]), torch.from_numpy(pred[i])).item() for i in range(50)
    )
    expected = 1.0 / (2 * (loss / 50))
    assert report.score == pytest.approx(expected, rel=1e-6)
    assert report.passed is (expected >= 100.0)
    assert report.n_images == 50
    assert report.details["mean_mse"] == pytest.approx(loss / 50, rel=1e-6)


def test_per_keypoint_rmse_is_in_pixels() -> None:
    truth = np.zeros((4, 15, 2), dtype=np.float32)
    pred = truth.copy()
    pred[:, 10, :] = 2.0 / 48.0  # nose tip off by 2 px in x and y
    report = score_predictions(pred, truth, threshold=100.0)
    assert report.parts[10] == pytest.approx(2.0, rel=1e-6)
    assert report.parts[0] == 0.0
    assert len(report.parts) == 15


def test_perfect_prediction_is_capped_and_json_able() -> None:
    truth = np.full((3, 15, 2), 0.25, dtype=np.float32)
    report = score_predictions(truth.copy(), truth, threshold=100.0)
    assert report.score == MAX_SCORE and report.passed
    json.dumps({"score": report.score})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_raises_non_finite(bad: float) -> None:
    truth = np.zeros((3, 15, 2), dtype=np.float32)
    pred = truth.copy()
    pred[2, 4, 1] = bad
    with pytest.raises(GradingFailure) as info:
        score_predictions(pred, truth, threshold=100.0)
    assert info.value.kind is FailureKind.NON_FINITE
    assert "image 3" in info.value.detail and "right_eye_inner_corner" in info.value.detail
