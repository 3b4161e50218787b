"""Deterministic synthetic 32x32 colour images in 10 classes, for the image-classification demo.

CIFAR-10 itself cannot be downloaded on the grading machines, so the demo exercise and the
test-suite use drawn images of the same size and format: a shape or a texture in one colour on
a background of another, placed, sized and turned at random, lit unevenly and noised. The
class decides the shape; everything else is noise a classifier must learn to ignore.

Vectorised over a chunk of images at a time: 1000 images take well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
CLASS_NAMES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "diagonal bar",
    "dot grid",
)
# Distinct default seeds per split: train, val and test never share an image.
SPLIT_SEEDS: dict[str, int] = {"train": 31_000_101, "val": 31_000_202, "test": 31_000_303}
_CHUNK = 500

Array = np.ndarray


def _col(a: Array) -> Array:
    return np.asarray(a, dtype=np.float32)[:, None, None]


def _soft(signed: Array, softness: float = 0.7) -> Array:
    """Anti-aliased mask from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed * (0.5 / softness), 0.0, 1.0)


def _masks(labels: Array, rng: np.random.Generator) -> Array:
    """(n, 32, 32) float32 coverage of each image's shape."""
    n = len(labels)
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    v, u = np.meshgrid(grid, grid, indexing="ij")
    cx, cy = _col(rng.uniform(11, 21, n)), _col(rng.uniform(11, 21, n))
    r = _col(rng.uniform(5.5, 9.5, n))
    # Textures stay near their class's orientation; shapes turn freely.
    texture = np.isin(labels, (5, 6, 7, 8))
    turn = np.where(texture, rng.uniform(-0.2, 0.2, n), rng.uniform(-np.pi, np.pi, n))
    cos, sin = _col(np.cos(turn)), _col(np.sin(turn))
    x = (u - cx) * cos + (v - cy) * sin
    y = -(u - cx) * sin + (v - cy) * cos
    period = _col(rng.uniform(4.0, 6.5, n))
    patch = np.maximum(np.abs(x), np.abs(y)) - (r + 3.0)  # the square a texture fills
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for label in range(len(CLASS_NAMES)):
        rows = labels == label
        if not rows.any():
            continue
        xs, ys, rs, ps, pt = x[rows], y[rows], r[rows], period[rows], patch[rows]
        if label == 0:
            d = np.hypot(xs, ys) - rs
        elif label == 1:
            d = np.maximum(np.abs(xs), np.abs(ys)) - rs * 0.8
        elif label == 2:
            d = np.max(
                [xs * np.cos(a) + ys * np.sin(a) - rs * 0.5
                 for a in (np.pi / 2, np.pi / 2 + 2.094, np.pi / 2 - 2.094)],
                axis=0,
            )
        elif label == 3:
            bar1 = np.maximum(np.abs(xs) - rs, np.abs(ys) - rs * 0.28)
            bar2 = np.maximum(np.abs(ys) - rs, np.abs(xs) - rs * 0.28)
            d = np.minimum(bar1, bar2)
        elif label == 4:
            d = np.abs(np.hypot(xs, ys) - rs * 0.8) - rs * 0.22
        elif label == 5:
            d = np.maximum(pt, -np.cos(2 * np.pi * ys / ps) * ps / 4)
        elif label == 6:
            d = np.maximum(pt, -np.cos(2 * np.pi * xs / ps) * ps / 4)
        elif label == 7:
            checks = np.sin(np.pi * xs / ps) * np.sin(np.pi * ys / ps)
            d = np.maximum(pt, -checks * ps / 3)
        elif label == 8:
            d = np.abs(xs - ys) / np.sqrt(2) - 1.8
        else:
            cell_x = np.mod(xs, ps) - ps / 2
            cell_y = np.mod(ys, ps) - ps / 2
            d = np.maximum(pt, np.hypot(cell_x, cell_y) - ps / 4)
        out[rows] = _soft(d)
    return out


def _colours(rng: np.random.Generator, n: int) -> tuple[Array, Array]:
    """Foreground and background colours far enough apart to see the shape."""
    fg = rng.uniform(0.0, 1.0, (n, 3))
    bg = rng.uniform(0.0, 1.0, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < 0.45
    bg[close] = 1.0 - fg[close]
    return fg.astype(np.float32), bg.astype(np.float32)


def _draw_chunk(rng: np.random.Generator, n: int) -> tuple[Array, Array]:
    labels = rng.integers(0, len(CLASS_NAMES), n)
    mask = _masks(labels, rng)[..., None]
    fg, bg = _colours(rng, n)
    image = bg[:, None, None, :] * (1.0 - mask) + fg[:, None, None, :] * mask
    # Uneven light: a gradient in a random direction, and overall brightness.
    grid = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    angle = rng.uniform(0, 2 * np.pi, n)
    slope = _col(rng.uniform(0.0, 0.25, n))
    light = 1.0 + slope * (gx * _col(np.cos(angle)) + gy * _col(np.sin(angle)))
    image = image * light[..., None] * _col(rng.uniform(0.75, 1.15, n))[..., None]
    image += rng.normal(0.0, 1.0, image.shape).astype(np.float32) * _col(
        rng.uniform(0.01, 0.07, n)
    )[..., None]
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, labels.astype(np.int64)


def generate_shapes(*, split: str, count: int, seed: int | None = None) -> tuple[Array, Array]:
    """`count` images uint8 (N, 32, 32, 3) and class labels int64 (N,), the same every time
    for the same split, count and seed."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    rng = np.random.default_rng(SPLIT_SEEDS[split] if seed is None else seed)
    images, labels = [], []
    for start in range(0, count, _CHUNK):
        chunk_images, chunk_labels = _draw_chunk(rng, min(_CHUNK, count - start))
        images.append(chunk_images)
        labels.append(chunk_labels)
    if not images:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels)


def public_sample_shapes(count: int) -> Array:
    """Public images (the `val` split): what the pre-flight and the page's preview use."""
    return generate_shapes(split="val", count=count)[0]


def write_npz(path: Path, images: Array, labels: Array) -> None:
    """The classification test-set format: `images` uint8 (N, 32, 32, 3), `labels` (N,)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, images=images, labels=labels)
