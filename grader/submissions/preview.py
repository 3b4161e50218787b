"""Predicted keypoints on a few PUBLIC faces, for the picture on the submission page.

The faces come from the synthetic `val` split (never the hidden test set), and the student's
model runs only inside the sandbox, in the worker, as part of grading. The preview is a
courtesy: any failure leaves it empty and never changes the grade.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from grader.config import Settings

logger = logging.getLogger(__name__)

PREVIEW_FACES = 6
PIXELS_PER_UNIT = 48.0


@lru_cache(maxsize=1)
def public_faces() -> np.ndarray:
    """uint8 (PREVIEW_FACES, 96, 96); deterministic, so the web server draws the same faces."""
    from grader.grading.synth import public_sample_faces

    faces: np.ndarray = public_sample_faces(PREVIEW_FACES)
    faces.setflags(write=False)
    return faces


def predict_preview(
    settings: Settings, model_path: Path, *, time_limit_s: float | None
) -> list[list[list[float]]] | None:
    """Keypoints in pixels, [face][keypoint] -> [x, y], or None when there is no preview."""
    if not settings.sandbox_enabled:
        return None  # the student's model may run only inside the sandbox
    from grader.grading.engine import sandbox_limits
    from grader.grading.sandbox import predict_in_sandbox

    limits = sandbox_limits(settings, time_limit_s=time_limit_s)
    try:
        predictions = predict_in_sandbox(
            model_path,
            public_faces(),
            device=settings.device,
            batch_size=settings.batch_size,
            limits=limits,
        )
    except Exception as exc:  # a preview must never turn into a grading failure
        logger.info("no preview for %s: %s", model_path.name, exc)
        return None
    pixels = np.asarray(predictions, dtype=np.float64) * PIXELS_PER_UNIT + PIXELS_PER_UNIT
    if not np.all(np.isfinite(pixels)):
        return None
    rounded: list[list[list[float]]] = np.round(pixels, 1).tolist()
    return rounded
