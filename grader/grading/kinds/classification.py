"""Image classification (CIFAR-10's shape): 32x32 RGB images in, 10 logits out, scored as the
percentage of test images whose largest logit is the true class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds.base import Breakdown, Kind, ScoreReport

if TYPE_CHECKING:
    import torch

CLASSES = 10
IMAGE_SIZE = 32
# Logits closer than this (relative to the largest) may swap places under a faster plan's
# float32 rounding; those images are predicted again the course's way.
TIE_TOLERANCE = 1e-4


class ImageClassification(Kind):
    name = "classification"
    title = "Image classification"
    image_shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    output_shape = (CLASSES,)
    input_text = "a float32 batch of shape (N, 3, 32, 32), RGB pixels in [0, 1]"
    output_text = "10 floating-point values per image (one logit per class)"
    example_input = "torch.zeros(1, 3, 32, 32)"
    export_input = "torch.zeros(2, 3, 32, 32)"
    score_text = "accuracy in percent: images whose largest logit is the true class"
    breakdown = Breakdown(
        title="Accuracy per class",
        unit="%",
        labels=tuple(f"class {c}" for c in range(CLASSES)),
        higher_is_better=True,
    )
    default_threshold = 80.0
    demo_file_name = "demo_classification_test.npz"
    test_set_suffix = ".npz"
    test_set_format = (
        "an .npz file: 'images' uint8 (N, 32, 32, 3) (height, width, RGB) and 'labels' "
        "integers (N,) in [0, 10)"
    )

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 / 255 as float32, channels first: (N, 3, 32, 32)."""
        import torch

        images = self.check_images(images)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return x.contiguous()

    def ambiguous(self, predictions: torch.Tensor) -> torch.Tensor:
        import torch

        if predictions.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long)
        top2 = predictions.topk(2, dim=1).values
        gap = top2[:, 0] - top2[:, 1]
        scale = top2[:, 0].abs().clamp(min=1.0)
        return torch.nonzero(gap <= TIE_TOLERANCE * scale).flatten()

    def parse_test_set(self, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
        from grader.grading.testdata.images_npz import parse_images_npz

        return parse_images_npz(path, name, image_shape=self.image_shape, classes=CLASSES)

    def score(
        self, predictions: np.ndarray, labels: np.ndarray, *, threshold: float
    ) -> ScoreReport:
        logits = np.asarray(predictions)
        truth = np.asarray(labels)
        if logits.shape != (len(truth), CLASSES):
            raise GradingFailure(
                FailureKind.BAD_OUTPUT,
                f"predictions have shape {logits.shape}, expected {(len(truth), CLASSES)}",
            )
        if len(truth) == 0:
            raise ValueError("cannot score an empty test set")
        self.check_finite(logits)
        # np.argmax takes the first of equal maxima, as torch.argmax does on the CPU.
        predicted = logits.argmax(axis=1)
        correct = predicted == truth
        score = 100.0 * int(correct.sum()) / len(truth)
        confusion = np.zeros((CLASSES, CLASSES), dtype=np.int64)
        np.add.at(confusion, (truth, predicted), 1)
        counts = confusion.sum(axis=1)
        per_class = [
            float(confusion[c, c] / counts[c] * 100.0) if counts[c] else float("nan")
            for c in range(CLASSES)
        ]
        return ScoreReport(
            score=score,
            passed=score >= threshold,
            threshold=float(threshold),
            n_images=len(truth),
            parts=per_class,
            details={"confusion": confusion.tolist(), "correct": int(correct.sum())},
        )

    def sample_images(self, count: int) -> np.ndarray:
        from grader.grading.testdata.shapes import public_sample_shapes

        return public_sample_shapes(count)

    def preview(self, predictions: np.ndarray) -> Any:
        """The class the model picks for each sample image, with its softmax confidence."""
        logits = np.asarray(predictions, dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != CLASSES or not np.all(np.isfinite(logits)):
            return None
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        confidence = shifted.max(axis=1) / shifted.sum(axis=1)
        return [
            {"label": int(c), "confidence": round(float(p), 3)}
            for c, p in zip(logits.argmax(axis=1), confidence, strict=True)
        ]

    def write_synthetic(
        self, path: Path, *, count: int, split: str = "test", seed: int | None = None
    ) -> str:
        from grader.grading.testdata.shapes import generate_shapes, write_npz

        images, labels = generate_shapes(split=split, count=count, seed=seed)
        write_npz(path, images, labels)
        return "shapes"
