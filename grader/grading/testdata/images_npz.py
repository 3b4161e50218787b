"""The image-classification test-set format: an .npz file holding `images`, uint8 of shape
(N, 32, 32, 3) (height, width, RGB, as CIFAR-10's own arrays), and `labels`, integers in
[0, 10) of shape (N,). Anything else is an error naming the array and the problem; pickled
objects are refused (np.load runs with allow_pickle=False)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from grader.grading.testdata.testsets import TestSetError

MAX_IMAGES = 200_000


def parse_images_npz(
    path: Path, name: str, *, image_shape: tuple[int, ...], classes: int
) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("images", "labels") if key not in data.files]
            if missing:
                raise TestSetError(
                    f"{name}: missing array(s) {', '.join(missing)}; expected 'images' uint8 "
                    f"(N, {', '.join(map(str, image_shape))}) and 'labels' (N,) in [0, {classes})"
                )
            images, labels = data["images"], data["labels"]
    except TestSetError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise TestSetError(f"{name}: not a NumPy .npz file of arrays ({exc})") from None
    if images.dtype != np.uint8:
        raise TestSetError(f"{name}: 'images' has dtype {images.dtype}, expected uint8 (0-255)")
    if images.ndim != 1 + len(image_shape) or images.shape[1:] != image_shape:
        raise TestSetError(
            f"{name}: 'images' has shape {images.shape}, expected "
            f"(N, {', '.join(map(str, image_shape))})"
        )
    n = images.shape[0]
    if n == 0:
        raise TestSetError(f"{name}: 'images' holds no image")
    if n > MAX_IMAGES:
        raise TestSetError(f"{name}: {n} images, at most {MAX_IMAGES} are taken")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise TestSetError(f"{name}: 'labels' has shape {labels.shape}, expected ({n},)")
    if labels.dtype.kind not in "iu":
        raise TestSetError(f"{name}: 'labels' has dtype {labels.dtype}, expected integers")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        first = int(bad[0])
        raise TestSetError(
            f"{name}: label {first + 1} is {int(labels[first])}; labels must lie in [0, {classes})"
        )
    return np.ascontiguousarray(images), labels.astype(np.int64)
