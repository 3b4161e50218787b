"""The trusted side of grading: predictions + hidden keypoints -> the course's score.

The course sums `MSELoss(keypoints, predicted)` (the mean over the 30 values of one image) over
images with batch size 1, divides by the number of images and returns `1 / (2 * mean)`. We do
the same arithmetic vectorised, accumulating in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.testsets import KEYPOINT_NAMES

PIXELS_PER_UNIT = 48.0
# A perfect prediction has mean MSE 0 and an infinite score, which JSON cannot carry. Scores are
# capped here; reaching it needs an RMSE under 0.001 normalised units (0.05 px).
MAX_SCORE = 1_000_000.0


@dataclass
class ScoreReport:
    score: float
    passed: bool
    threshold: float
    n_images: int
    mean_mse: float
    per_image_mse: np.ndarray
    per_keypoint_rmse_px: list[float]


def score_from_mean_mse(mean_mse: float) -> float:
    if mean_mse <= 0.5 / MAX_SCORE:
        return MAX_SCORE
    return 1.0 / (2.0 * mean_mse)


def check_finite(predictions: np.ndarray, *, images: str = "image") -> None:
    """NON_FINITE, naming the first image and keypoint, unless every value is finite."""
    pred = np.asarray(predictions)
    finite = np.isfinite(pred)
    if not finite.all():
        image, keypoint, _ = np.argwhere(~finite)[0]
        raise GradingFailure(
            FailureKind.NON_FINITE,
            f"first at {images} {int(image) + 1}, {KEYPOINT_NAMES[int(keypoint)]}: "
            f"{float(pred[image, keypoint][~finite[image, keypoint]][0])}",
        )


def score_predictions(
    predictions: np.ndarray, keypoints: np.ndarray, *, threshold: float
) -> ScoreReport:
    """Score float (N, 15, 2) predictions against normalised (N, 15, 2) keypoints."""
    pred = np.asarray(predictions)
    truth = np.asarray(keypoints)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[1:] != (15, 2):
        raise GradingFailure(
            FailureKind.BAD_OUTPUT,
            f"predictions have shape {pred.shape}, expected {truth.shape}",
        )
    if len(truth) == 0:
        raise ValueError("cannot score an empty test set")
    check_finite(pred)
    squared = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2
    per_image_mse = squared.reshape(len(truth), -1).mean(axis=1)
    mean_mse = float(per_image_mse.mean())
    score = score_from_mean_mse(mean_mse)
    per_keypoint = np.sqrt(squared.mean(axis=(0, 2))) * PIXELS_PER_UNIT
    return ScoreReport(
        score=score,
        passed=score >= threshold,
        threshold=float(threshold),
        n_images=len(truth),
        mean_mse=mean_mse,
        per_image_mse=per_image_mse,
        per_keypoint_rmse_px=[float(v) for v in per_keypoint],
    )
