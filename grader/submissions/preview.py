"""The public sample images the submission page shows the model's predictions on.

They come from the kind's synthetic `val` split (never the hidden test set). The worker hands
them to the same sandboxed run that grades the test set, after the grade is settled: the model
is loaded once and runs with the plan chosen for grading. What the page draws from the
predictions is the kind's (`Kind.preview`). The preview is a courtesy: any failure leaves it
empty and never changes the grade.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.grading.kinds import get_kind
from grader.submissions.models import Result, ResultPreview

PREVIEW_IMAGES = 6


@lru_cache(maxsize=8)
def preview_samples(kind_name: str) -> np.ndarray:
    """uint8 (PREVIEW_IMAGES, *image_shape); deterministic, so the web server draws the same
    images."""
    samples = get_kind(kind_name).sample_images(PREVIEW_IMAGES)
    samples.setflags(write=False)
    return samples


def stored_preview(session: Session, *, result: Result | None) -> list[Any] | None:
    """The preview stored with a result (its own table), or None when there is none."""
    if result is None:
        return None
    return session.scalar(select(ResultPreview.data).where(ResultPreview.result_id == result.id))
