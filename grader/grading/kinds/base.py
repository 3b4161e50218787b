"""What an exercise kind is: everything the grader needs to know about one kind of task.

A kind is pure code, imported on both sides of the sandbox: the confined child asks it how
stored images become the model's input and what one prediction looks like; the trusted side
asks it how a test-set file is parsed and validated, how predictions are scored and passed,
what the per-part breakdown is, and what the web page draws. Nothing else in the grader
knows a shape. Adding a kind is one module here (and its test-set format in testdata/).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Breakdown:
    """The per-part figures shown under a score (per keypoint, per class)."""

    title: str
    unit: str
    labels: tuple[str, ...]
    # Whether a larger value is better (accuracy) or worse (an error), for the bar colours.
    higher_is_better: bool


def json_parts(values: list[float]) -> list[float | None]:
    """Parts as strict JSON allows them: None where a part has no test images (NaN)."""
    return [float(v) if math.isfinite(v) else None for v in values]


@dataclass
class ScoreReport:
    score: float
    passed: bool
    threshold: float
    n_images: int
    # One value per `Kind.breakdown.labels` entry; NaN where a part has no test images.
    parts: list[float]
    # Kind-specific figures kept with the result (a confusion matrix, the mean MSE).
    details: dict[str, Any] = field(default_factory=dict)


class Kind(ABC):
    """One kind of exercise. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    # One stored test image, uint8, as the test set holds it and the sandbox receives it.
    image_shape: ClassVar[tuple[int, ...]]
    # What one image's prediction becomes on the trusted side (float32).
    output_shape: ClassVar[tuple[int, ...]]
    # For the messages a student reads.
    input_text: ClassVar[str]
    output_text: ClassVar[str]
    example_input: ClassVar[str]
    # A batch of two for torch.export: a dynamic batch dimension cannot be exported from an
    # example of one image (torch specialises a size of 1).
    export_input: ClassVar[str]
    score_text: ClassVar[str]
    breakdown: ClassVar[Breakdown]
    default_threshold: ClassVar[float]
    # The demo exercise's test set file, under the data directory's testsets/.
    demo_file_name: ClassVar[str]
    test_set_format: ClassVar[str]
    test_set_suffix: ClassVar[str]

    @property
    def output_values(self) -> int:
        return math.prod(self.output_shape)

    @property
    def image_bytes(self) -> int:
        return math.prod(self.image_shape)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"expected uint8 images (N, {', '.join(map(str, self.image_shape))}) for "
                f"{self.name}, got {images.dtype} {images.shape}"
            )
        return np.ascontiguousarray(images)

    def check_finite(self, predictions: np.ndarray, *, images: str = "image") -> None:
        """NON_FINITE, naming the first image and part, unless every value is finite."""
        from grader.grading.failures import FailureKind, GradingFailure

        finite = np.isfinite(predictions)
        if not finite.all():
            where = np.argwhere(~finite)[0]
            image, part = int(where[0]), int(where[1]) if len(where) > 1 else 0
            labels = self.breakdown.labels
            name = labels[part] if part < len(labels) else f"value {part + 1}"
            value = predictions[tuple(where)]
            raise GradingFailure(
                FailureKind.NON_FINITE, f"first at {images} {image + 1}, {name}: {float(value)}"
            )

    # -- inside the sandbox ---------------------------------------------------------------

    @abstractmethod
    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """Stored uint8 images -> the float32 batch the model is given, exactly as the
        course's own loop builds it."""

    def ambiguous(self, predictions: torch.Tensor) -> torch.Tensor:
        """Rows whose verdict a float32 rounding could flip (a tie between two classes): the
        sandbox recomputes them the course's way. Continuous scores have none."""
        import torch

        return torch.zeros(0, dtype=torch.long)

    # -- the trusted side -------------------------------------------------------------------

    @abstractmethod
    def parse_test_set(self, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (N, *image_shape), labels); raises TestSetError naming `name`."""

    @abstractmethod
    def score(
        self, predictions: np.ndarray, labels: np.ndarray, *, threshold: float
    ) -> ScoreReport:
        """The course's score of float32 (N, *output_shape) predictions; raises
        GradingFailure(NON_FINITE) for a NaN or infinite prediction."""

    @abstractmethod
    def sample_images(self, count: int) -> np.ndarray:
        """Public images (never the hidden test set) for the pre-flight and the preview."""

    @abstractmethod
    def preview(self, predictions: np.ndarray) -> Any:
        """What the submission page draws from the predictions on `sample_images` (JSON)."""

    @abstractmethod
    def write_synthetic(
        self, path: Path, *, count: int, split: str = "test", seed: int | None = None
    ) -> str:
        """Write `count` synthetic images of `split` (train, val or test; each with its fixed
        seed unless `seed` is given) with their labels, in this kind's test-set format, to
        `path`; returns what they are ("faces"), for messages. The demo exercise's hidden
        test set is the `test` split."""
