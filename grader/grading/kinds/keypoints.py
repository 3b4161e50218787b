"""Facial keypoints: 96x96 grayscale faces in, 15 (x, y) keypoints out, scored as the course
does: 1 / (2 * mean per-image MSE), on keypoints normalised as (k - 48) / 48."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds.base import Breakdown, Kind, ScoreReport

if TYPE_CHECKING:
    import torch

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
KEYPOINT_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")
)
IMAGE_SIZE = 96
PIXELS_PER_UNIT = 48.0
# A perfect prediction has mean MSE 0 and an infinite score, which JSON cannot carry. Scores are
# capped here; reaching it needs an RMSE under 0.001 normalised units (0.05 px).
MAX_SCORE = 1_000_000.0


def score_from_mean_mse(mean_mse: float) -> float:
    if mean_mse <= 0.5 / MAX_SCORE:
        return MAX_SCORE
    return 1.0 / (2.0 * mean_mse)


class FacialKeypoints(Kind):
    name = "keypoints"
    title = "Facial keypoints"
    image_shape = (IMAGE_SIZE, IMAGE_SIZE)
    output_shape = (15, 2)
    input_text = "a float32 batch of shape (N, 1, 96, 96), pixels in [0, 1]"
    output_text = "30 floating-point values per image (15 keypoints as x, y)"
    example_input = "torch.zeros(1, 1, 96, 96)"
    export_input = "torch.zeros(2, 1, 96, 96)"
    score_text = "1 / (2 × mean per-image MSE) on keypoints normalised as (k − 48) / 48"
    breakdown = Breakdown(
        title="Error per keypoint",
        unit="px",
        labels=KEYPOINT_NAMES,
        higher_is_better=False,
    )
    default_threshold = 100.0
    demo_file_name = "demo_test.csv"
    test_set_suffix = ".csv"
    test_set_format = (
        "the course's CSV: the 30 Kaggle keypoint columns (pixels) and an Image column of "
        "9216 space-separated pixel values; rows missing a keypoint are dropped"
    )

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """Exactly the course's conversion: uint8 / 255 as float32, shape (N, 1, 96, 96)."""
        import torch

        images = self.check_images(images)
        # In place: one float copy of the whole set instead of two (same values).
        return torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)

    def parse_test_set(self, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
        from grader.grading.testdata.faces_csv import parse_course_csv

        return parse_course_csv(path, name)

    def score(
        self, predictions: np.ndarray, labels: np.ndarray, *, threshold: float
    ) -> ScoreReport:
        """The course's MSELoss per image (mean over its 30 values), averaged over images, in
        float64 (vectorised, the same arithmetic as its batch-1 loop)."""
        pred = np.asarray(predictions)
        truth = np.asarray(labels)
        if pred.shape != truth.shape or pred.shape[1:] != self.output_shape:
            raise GradingFailure(
                FailureKind.BAD_OUTPUT,
                f"predictions have shape {pred.shape}, expected {truth.shape}",
            )
        if len(truth) == 0:
            raise ValueError("cannot score an empty test set")
        self.check_finite(pred)
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
            parts=[float(v) for v in per_keypoint],
            details={"mean_mse": mean_mse},
        )

    def sample_images(self, count: int) -> np.ndarray:
        from grader.grading.testdata.faces import public_sample_faces

        faces: np.ndarray = public_sample_faces(count)
        return faces

    def preview(self, predictions: np.ndarray) -> Any:
        """Keypoints in pixels, [face][keypoint] -> [x, y], or None when not drawable."""
        pixels = np.asarray(predictions, dtype=np.float64) * PIXELS_PER_UNIT + PIXELS_PER_UNIT
        if pixels.shape[1:] != self.output_shape or not np.all(np.isfinite(pixels)):
            return None
        return np.round(pixels, 1).tolist()

    def write_synthetic(
        self, path: Path, *, count: int, split: str = "test", seed: int | None = None
    ) -> str:
        from grader.grading.testdata.faces import generate_faces, write_course_csv

        images, keypoints = generate_faces(split=split, count=count, seed=seed)
        write_course_csv(path, images, keypoints)
        return "faces"
