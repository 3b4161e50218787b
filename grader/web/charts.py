"""Geometry for the inline SVG charts, computed in Python so templates only place shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from grader.grading.kinds.base import Breakdown


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None  # None: no test image of this part
    width: float  # 0..100, percent of the chart's bar area


def breakdown_bars(breakdown: Breakdown, values: list[float | None] | None) -> list[Bar]:
    """One bar per part of the kind's breakdown. Errors scale to the largest (at least 1, so
    tiny errors stay tiny instead of filling the chart); accuracies scale to 100 %."""
    if not values:
        return []
    known = [v for v in values if v is not None and math.isfinite(v)]
    top = 100.0 if breakdown.higher_is_better else max(max(known, default=1.0), 1.0)
    bars = []
    for name, value in zip(breakdown.labels, values, strict=False):
        if value is None or not math.isfinite(value):
            bars.append(Bar(name.replace("_", " "), None, 0.0))
        else:
            bars.append(Bar(name.replace("_", " "), value, min(100.0 * value / top, 100.0)))
    return bars


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


@dataclass(frozen=True)
class Cell:
    row: int  # the true class
    col: int  # the predicted class
    count: int
    shade: float  # 0..1 of the row's images
    correct: bool


def confusion_cells(matrix: list[list[int]] | None) -> list[Cell]:
    """A confusion matrix's cells, shaded by the share of their row (the true class), so a
    rare class is as readable as a common one."""
    if not matrix:
        return []
    cells = []
    for r, row in enumerate(matrix):
        total = sum(row)
        for c, count in enumerate(row):
            shade = count / total if total else 0.0
            cells.append(Cell(r, c, int(count), round(shade, 3), r == c))
    return cells
