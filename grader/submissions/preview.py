"""Predicted keypoints on a few PUBLIC faces, for the picture on the submission page.

The faces come from the synthetic `val` split (never the hidden test set). The worker hands them
to the same sandboxed run that grades the test set, after the grade is settled: the model is
loaded once and runs with the plan chosen for grading. The preview is a courtesy: any failure
leaves it empty and never changes the grade.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PREVIEW_FACES = 6
PIXELS_PER_UNIT = 48.0


@lru_cache(maxsize=1)
def public_faces() -> np.ndarray:
    """uint8 (PREVIEW_FACES, 96, 96); deterministic, so the web server draws the same faces."""
    from grader.grading.synth import public_sample_faces

    faces: np.ndarray = public_sample_faces(PREVIEW_FACES)
    faces.setflags(write=False)
    return faces


def preview_pixels(predictions: np.ndarray | None) -> list[list[list[float]]] | None:
    """Keypoints in pixels, [face][keypoint] -> [x, y], or None when there is no preview."""
    if predictions is None:
        return None
    pixels = np.asarray(predictions, dtype=np.float64) * PIXELS_PER_UNIT + PIXELS_PER_UNIT
    if pixels.shape != (PREVIEW_FACES, 15, 2) or not np.all(np.isfinite(pixels)):
        return None
    rounded: list[list[list[float]]] = np.round(pixels, 1).tolist()
    return rounded
