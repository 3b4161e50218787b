"""Hidden test sets in the course's CSV format, loaded into arrays and cached by content hash."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from grader.config import Settings

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
KEYPOINT_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")
)
IMAGE_COLUMN = "Image"
N_PIXELS = 96 * 96
DEMO_TEST_SET_NAME = "demo_test.csv"
DEMO_TEST_SET_COUNT = 1000
# v2: keypoints are range-checked, so a set cached by v1 is parsed (and checked) again.
_CACHE_VERSION = "v2"
# Keypoints are pixels of a 96 x 96 image. A label may lie a little outside the image (a face
# cut by the frame), but not beyond one image size from it: anything further is a unit or
# column mistake, and values like 1e200 would overflow the squared error into inf/NaN.
KEYPOINT_MIN_PX = -96.0
KEYPOINT_MAX_PX = 192.0


class TestSetError(ValueError):
    """The test-set file cannot be used; the message names the row and the problem."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestSet:
    """Images uint8 (N, 96, 96); keypoints float32 (N, 15, 2), normalised as (k - 48) / 48."""

    __test__ = False

    images: np.ndarray
    keypoints: np.ndarray
    sha256: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _where(row_number: int, line_number: int) -> str:
    return f"row {row_number} (line {line_number})"


def _parse_csv(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    images: list[np.ndarray] = []
    keypoints: list[list[float]] = []
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise TestSetError(f"{name}: the file is empty (no header line)")
            header = [column.strip() for column in header]
            missing = [c for c in (*KEYPOINT_COLUMNS, IMAGE_COLUMN) if c not in header]
            if missing:
                shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
                raise TestSetError(
                    f"{name}: line 1 (header): missing column(s) {shown}; expected the 30 "
                    f"Kaggle keypoint columns and '{IMAGE_COLUMN}'"
                )
            kp_index = [header.index(c) for c in KEYPOINT_COLUMNS]
            image_index = header.index(IMAGE_COLUMN)
            for row_number, row in enumerate(reader, start=1):
                line = reader.line_num
                where = _where(row_number, line)
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise TestSetError(
                        f"{name}: {where}: has {len(row)} fields, the header has {len(header)}"
                    )
                values: list[float] = []
                complete = True
                for column, index in zip(KEYPOINT_COLUMNS, kp_index, strict=True):
                    cell = row[index].strip()
                    if cell == "" or cell.lower() == "nan":
                        complete = False  # the course drops rows with a missing keypoint
                        break
                    try:
                        value = float(cell)
                    except ValueError:
                        raise TestSetError(
                            f"{name}: {where}: column {column}: {cell[:30]!r} is not a number"
                        ) from None
                    if not np.isfinite(value):
                        raise TestSetError(
                            f"{name}: {where}: column {column}: {cell[:30]!r} is not finite"
                        )
                    if not KEYPOINT_MIN_PX <= value <= KEYPOINT_MAX_PX:
                        raise TestSetError(
                            f"{name}: {where}: column {column}: {cell[:30]!r} is outside "
                            f"[{KEYPOINT_MIN_PX:g}, {KEYPOINT_MAX_PX:g}]; keypoints are pixels "
                            "of the 96 x 96 image"
                        )
                    values.append(value)
                pixels = row[image_index].split()
                if len(pixels) != N_PIXELS:
                    raise TestSetError(
                        f"{name}: {where}: column {IMAGE_COLUMN}: has {len(pixels)} pixel "
                        f"values, expected {N_PIXELS} (96 x 96)"
                    )
                if not complete:
                    continue
                images.append(_parse_pixels(pixels, name, where))
                keypoints.append(values)
    except UnicodeDecodeError as exc:
        raise TestSetError(f"{name}: not a text CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise TestSetError(f"{name}: malformed CSV: {exc}") from None
    if not images:
        raise TestSetError(
            f"{name}: no usable rows (every data row is missing at least one keypoint, "
            "or the file has no data rows)"
        )
    image_array = np.stack(images).reshape(-1, 96, 96)
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 15, 2)
    return image_array, ((kp - 48.0) / 48.0).astype(np.float32)


def _parse_pixels(pixels: list[str], name: str, where: str) -> np.ndarray:
    try:
        values = np.array(pixels, dtype=np.float64)
    except ValueError:
        bad = next(p for p in pixels if not _is_number(p))
        position = pixels.index(bad) + 1
        raise TestSetError(
            f"{name}: {where}: column {IMAGE_COLUMN}: pixel {position} is {bad[:30]!r}, "
            "not a number"
        ) from None
    out_of_range = (values < 0) | (values > 255) | (values != np.floor(values))
    if out_of_range.any():
        position = int(np.argmax(out_of_range)) + 1
        raise TestSetError(
            f"{name}: {where}: column {IMAGE_COLUMN}: pixel {position} is "
            f"{pixels[position - 1]!r}; pixels must be integers from 0 to 255"
        )
    return values.astype(np.uint8)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_test_set(
    csv_path: Path, *, cache_dir: Path | None = None, display_name: str | None = None
) -> TestSet:
    """Load a course CSV; with `cache_dir`, reuse an .npz keyed by the file's sha256.

    Errors name the file as `display_name` (an upload's own name, not the server's temp file).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise TestSetError(f"{display_name or csv_path}: no such file")
    sha = _sha256(csv_path)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"testset-{_CACHE_VERSION}-{sha}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file) as data:
                    return TestSet(images=data["images"], keypoints=data["keypoints"], sha256=sha)
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache entry is rebuilt below
    images, keypoints = _parse_csv(csv_path, display_name or csv_path.name)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, keypoints=keypoints)
        os.replace(tmp, cache_file)
    return TestSet(images=images, keypoints=keypoints, sha256=sha)


def demo_test_set_path(settings: Settings) -> Path:
    """The demo exercise's hidden test set (synthetic `test` split), generated on first use."""
    path = settings.testsets_dir / DEMO_TEST_SET_NAME
    if not path.is_file():
        from grader.grading.synth import generate_faces, write_course_csv

        images, keypoints = generate_faces(split="test", count=DEMO_TEST_SET_COUNT)
        write_course_csv(path, images, keypoints)
    return path
