"""Deterministic synthetic faces in the course's CSV format.

There is no real face data on the grading machines, so the demo exercise and the test-suite use
drawn faces: a head, eyes with pupils, brows, a nose and a mouth, each placed, scaled, rotated
and shaped at random, lit unevenly and noised. The labels are the 15 Kaggle keypoints, computed
from the same parameters the drawing uses, so they are exact.

Everything is vectorised over faces (one chunk of faces at a time), which keeps 1000 faces at
about a second.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from grader.grading.kinds.keypoints import IMAGE_SIZE, KEYPOINT_COLUMNS

# Distinct default seeds per split: train, val and test never share a face.
SPLIT_SEEDS: dict[str, int] = {"train": 20_240_101, "val": 20_240_202, "test": 20_240_303}
_CHUNK = 200

Array = np.ndarray


def _split_seed(split: str) -> int:
    try:
        return SPLIT_SEEDS[split]
    except KeyError:
        raise ValueError(
            f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}"
        ) from None


def _smooth_inside(signed: Array, softness: float = 0.6) -> Array:
    """Anti-aliased mask from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed * (0.5 / softness), 0.0, 1.0)


def _col(a: Array) -> Array:
    # Rendering runs in float32 (twice as fast); the labels stay float64.
    return np.asarray(a, dtype=np.float32)[:, None, None]


def _segment_distance(u: Array, v: Array, p0: Array, p1: Array) -> Array:
    """Distance (in face units) from each pixel to the segment p0-p1 of each face."""
    ax, ay = _col(p0[:, 0]), _col(p0[:, 1])
    dx, dy = _col(p1[:, 0] - p0[:, 0]), _col(p1[:, 1] - p0[:, 1])
    t = np.clip(((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(u - ax - t * dx, v - ay - t * dy)


def _draw_chunk(rng: np.random.Generator, n: int) -> tuple[Array, Array]:
    # Face geometry, in face units (one unit = `scale` pixels), before rotation.
    scale = rng.uniform(29.0, 37.0, n)
    cx = 48.0 + rng.normal(0.0, 2.5, n)
    cy = 49.0 + rng.normal(0.0, 2.5, n)
    theta = rng.normal(0.0, 0.12, n)
    head_a = rng.uniform(0.85, 1.0, n)
    head_b = rng.uniform(1.15, 1.35, n)

    eye_x = rng.uniform(0.42, 0.56, n)
    eye_y = rng.uniform(-0.38, -0.24, n)
    eye_w = rng.uniform(0.16, 0.22, n)
    eye_h = eye_w * rng.uniform(0.35, 0.7, n)  # how open the eyes are
    gaze = rng.uniform(-0.35, 0.35, n) * eye_w

    brow_gap = rng.uniform(0.12, 0.26, n)
    brow_inner_x = eye_x - eye_w * rng.uniform(0.7, 1.1, n)
    brow_outer_x = eye_x + eye_w * rng.uniform(1.1, 1.6, n)
    brow_inner_y = eye_y - brow_gap - rng.uniform(-0.05, 0.08, n)  # frown or surprise
    brow_outer_y = eye_y - brow_gap + rng.uniform(-0.02, 0.08, n)
    brow_thick = rng.uniform(0.035, 0.065, n)

    nose_y = rng.uniform(0.3, 0.45, n)
    nose_w = rng.uniform(0.09, 0.16, n)

    mouth_y = nose_y + rng.uniform(0.3, 0.42, n)
    mouth_w = rng.uniform(0.3, 0.45, n)
    mouth_top = rng.uniform(0.04, 0.1, n)
    mouth_bottom = rng.uniform(0.05, 0.2, n)  # a little open, or wide open
    smile = rng.uniform(-0.05, 0.12, n)  # corners up (smile) or down

    # Tones: background, skin, features; lighting gradient and noise.
    background = rng.uniform(20.0, 200.0, n)
    skin = np.clip(background + rng.choice([-1.0, 1.0], n) * rng.uniform(40.0, 110.0, n), 60, 235)
    feature = skin * rng.uniform(0.15, 0.45, n)
    light_angle = rng.uniform(0.0, 2.0 * np.pi, n)
    light_strength = rng.uniform(0.0, 0.5, n)
    noise_sigma = rng.uniform(2.0, 9.0, n)

    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    dx = xs[None] - _col(cx)
    dy = ys[None] - _col(cy)
    cos, sin = _col(np.cos(theta)), _col(np.sin(theta))
    s = _col(scale)
    u = (dx * cos + dy * sin) / s
    v = (-dx * sin + dy * cos) / s

    img = np.broadcast_to(_col(background), (n, IMAGE_SIZE, IMAGE_SIZE)).copy()

    def paint(mask: Array, tone: Array) -> None:
        nonlocal img
        img = img * (1.0 - mask) + mask * _col(tone)

    # Head: ellipse, signed distance approximated in pixels.
    r = np.sqrt((u / _col(head_a)) ** 2 + (v / _col(head_b)) ** 2)
    paint(_smooth_inside((r - 1.0) * s * _col(head_a), 0.8), skin)
    # Ears for distraction: small ellipses at the head's sides.
    for side in (-1.0, 1.0):
        re = np.sqrt(((u - side * _col(head_a)) / 0.12) ** 2 + ((v + 0.05) / 0.22) ** 2)
        paint(_smooth_inside((re - 1.0) * s * 0.12) * (r > 0.97), skin * 0.92)

    for side in (1.0, -1.0):  # +1: the subject's left eye, on the image's right
        ex, ey = side * _col(eye_x), _col(eye_y)
        re = np.sqrt(((u - ex) / _col(eye_w)) ** 2 + ((v - ey) / _col(eye_h)) ** 2)
        paint(_smooth_inside((re - 1.0) * s * _col(eye_h)), np.clip(skin + 60.0, 0, 255))
        rp = np.hypot(u - ex - _col(gaze), v - ey) / _col(eye_h * 0.85)
        eye_inside = _smooth_inside((re - 1.0) * s * _col(eye_h))
        paint(_smooth_inside((rp - 1.0) * s * _col(eye_h * 0.85)) * eye_inside, feature)
        # Brow: a thick segment from the inner to the outer end.
        p0 = np.stack([side * brow_inner_x, brow_inner_y], axis=1)
        p1 = np.stack([side * brow_outer_x, brow_outer_y], axis=1)
        dist = _segment_distance(u, v, p0, p1)
        paint(_smooth_inside((dist - _col(brow_thick)) * s), feature)

    # Nose: a ridge line from between the eyes and two nostrils beside the tip.
    p0 = np.stack([np.zeros(n), eye_y + 0.1], axis=1)
    p1 = np.stack([np.zeros(n), nose_y], axis=1)
    ridge = _segment_distance(u, v, p0, p1)
    paint(_smooth_inside((ridge - 0.02) * s) * 0.5, feature)
    for side in (-1.0, 1.0):
        rn = np.hypot((u - side * _col(nose_w)) / 0.05, (v - _col(nose_y) + 0.01) / 0.035)
        paint(_smooth_inside((rn - 1.0) * s * 0.035), feature)
    rt = np.hypot(u / 0.06, (v - _col(nose_y)) / 0.045)
    paint(_smooth_inside((rt - 1.0) * s * 0.045) * 0.6, np.clip(skin + 30.0, 0, 255))

    # Mouth: between two half-ellipses around a centre line that bends with the smile.
    mw = _col(mouth_w)
    centre = _col(mouth_y) - _col(smile) * (u / mw) ** 2
    half = np.where(v < centre, _col(mouth_top), _col(mouth_bottom))
    rm = np.sqrt((u / mw) ** 2 + ((v - centre) / half) ** 2)
    paint(_smooth_inside((rm - 1.0) * s * half), feature * 0.8)
    lip_line = np.abs(v - centre) < 0.015
    paint(lip_line * (rm < 1.0) * 1.0, feature * 0.4)

    # Lighting and noise.
    lx, ly = _col(np.cos(light_angle)), _col(np.sin(light_angle))
    gradient = 1.0 + _col(light_strength) * ((xs[None] - 48.0) * lx + (ys[None] - 48.0) * ly) / 48
    img = img * gradient + rng.standard_normal(img.shape, dtype=np.float32) * _col(noise_sigma)
    images = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    zeros = np.zeros(n)
    local = np.stack(
        [
            [eye_x, eye_y],  # left_eye_center
            [-eye_x, eye_y],  # right_eye_center
            [eye_x - eye_w, eye_y],  # left_eye_inner_corner
            [eye_x + eye_w, eye_y],  # left_eye_outer_corner
            [-eye_x + eye_w, eye_y],  # right_eye_inner_corner
            [-eye_x - eye_w, eye_y],  # right_eye_outer_corner
            [brow_inner_x, brow_inner_y],  # left_eyebrow_inner_end
            [brow_outer_x, brow_outer_y],  # left_eyebrow_outer_end
            [-brow_inner_x, brow_inner_y],  # right_eyebrow_inner_end
            [-brow_outer_x, brow_outer_y],  # right_eyebrow_outer_end
            [zeros, nose_y],  # nose_tip
            [mouth_w, mouth_y - smile],  # mouth_left_corner
            [-mouth_w, mouth_y - smile],  # mouth_right_corner
            [zeros, mouth_y - mouth_top],  # mouth_center_top_lip
            [zeros, mouth_y + mouth_bottom],  # mouth_center_bottom_lip
        ]
    )  # (15, 2, n)
    lu, lv = local[:, 0, :].T, local[:, 1, :].T  # (n, 15)
    c, sn, sc = np.cos(theta)[:, None], np.sin(theta)[:, None], scale[:, None]
    kx = cx[:, None] + sc * (lu * c - lv * sn)
    ky = cy[:, None] + sc * (lu * sn + lv * c)
    return images, np.stack([kx, ky], axis=2)


def generate_faces(*, split: str, count: int, seed: int | None = None) -> tuple[Array, Array]:
    """`count` faces: uint8 images (N, IMAGE_SIZE, IMAGE_SIZE) and keypoints in pixels,
    float64 (N, 15, 2)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = np.random.default_rng(_split_seed(split) if seed is None else seed)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    keypoints = np.empty((count, 15, 2), dtype=np.float64)
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        images[start : start + n], keypoints[start : start + n] = _draw_chunk(rng, n)
    return images, keypoints


def public_sample_faces(count: int) -> Array:
    """Faces from the public `val` split, safe to show on web pages."""
    return generate_faces(split="val", count=count)[0]


def write_course_csv(path: Path, images: Array, keypoints_px: Array) -> None:
    """Write the course's CSV: 30 keypoint columns then `Image`; atomically, byte-stable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flat = np.asarray(keypoints_px, dtype=np.float64).reshape(len(images), 30)
    with tmp.open("w", newline="", encoding="ascii") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*KEYPOINT_COLUMNS, "Image"])
        for kp, img in zip(flat, images, strict=True):
            pixels = " ".join(map(str, img.reshape(-1).tolist()))
            writer.writerow([f"{value:.6f}" for value in kp] + [pixels])
    os.replace(tmp, path)
