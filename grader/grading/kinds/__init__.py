"""Exercise kinds: each exercise names one (`Exercise.kind`), and everything that depends on
the task asks it (see base.py)."""

from __future__ import annotations

from grader.grading.kinds.base import Breakdown, Kind, ScoreReport
from grader.grading.kinds.classification import ImageClassification
from grader.grading.kinds.keypoints import FacialKeypoints

KINDS: dict[str, Kind] = {
    kind.name: kind for kind in (FacialKeypoints(), ImageClassification())
}
DEFAULT_KIND = "keypoints"


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown exercise kind {name!r}; known: {', '.join(KINDS)}") from None


def default_threshold(name: str, *, configured: float) -> float:
    """The pass threshold a new exercise of kind `name` gets: the configured one
    (GRADER_DEFAULT_THRESHOLD) for the default kind, the kind's own otherwise."""
    return configured if name == DEFAULT_KIND else get_kind(name).default_threshold


__all__ = [
    "DEFAULT_KIND", "KINDS", "Breakdown", "Kind", "ScoreReport", "default_threshold", "get_kind",
]
