"""Geometry for the inline SVG charts, computed in Python so templates only place shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from grader.grading.kinds.keypoints import KEYPOINT_NAMES


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    width: float  # 0..100, percent of the chart's bar area


def keypoint_bars(rmse_px: list[float] | None) -> list[Bar]:
    """One bar per keypoint, scaled to the largest error (at least 1 px, so tiny errors stay
    tiny instead of filling the chart)."""
    if not rmse_px:
        return []
    top = max(max(rmse_px), 1.0)
    return [
        Bar(name.replace("_", " "), value, 100.0 * value / top)
        for name, value in zip(KEYPOINT_NAMES, rmse_px, strict=False)
    ]


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    height: float  # 0..100
    passing: bool


@dataclass(frozen=True)
class Histogram:
    bins: list[Bin]
    threshold_pos: float  # 0..100 along the x axis
    upper: float
    max_count: int
    open_ended: bool  # the last bin also holds every score above `upper`


def score_histogram(scores: list[float], *, threshold: float, n_bins: int = 10) -> Histogram:
    """Bins from 0 to a round upper bound that keeps the threshold in view; scores run up to a
    million (the course score is 1/MSE), so everything past the bound goes in the last bin."""
    top = max(scores, default=0.0)
    bound = max(threshold * 2.0, min(top, threshold * 5.0), 1.0)
    magnitude = 10 ** math.floor(math.log10(bound))
    upper = math.ceil(bound / magnitude) * magnitude
    width = upper / n_bins
    counts = [0] * n_bins
    for score in scores:
        counts[min(int(score // width), n_bins - 1) if score > 0 else 0] += 1
    max_count = max(counts, default=0)
    bins = [
        Bin(
            low=i * width,
            high=(i + 1) * width,
            count=c,
            height=(100.0 * c / max_count) if max_count else 0.0,
            passing=(i * width) >= threshold,
        )
        for i, c in enumerate(counts)
    ]
    return Histogram(
        bins=bins,
        threshold_pos=min(100.0 * threshold / upper, 100.0),
        upper=upper,
        max_count=max_count,
        open_ended=top > upper,
    )
