"""The course's CSV format for facial keypoints: 30 Kaggle keypoint columns (pixels) and an
`Image` column of 9216 space-separated pixel values. Rows with a missing keypoint are dropped,
as the course does; anything else wrong is an error naming the row and the problem."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from grader.grading.kinds.keypoints import IMAGE_SIZE, KEYPOINT_COLUMNS, PIXELS_PER_UNIT
from grader.grading.testdata.testsets import TestSetError

IMAGE_COLUMN = "Image"
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# Keypoints are pixels of a 96 x 96 image. A label may lie a little outside the image (a face
# cut by the frame), but not beyond one image size from it: anything further is a unit or
# column mistake, and values like 1e200 would overflow the squared error into inf/NaN.
KEYPOINT_MIN_PX = -96.0
KEYPOINT_MAX_PX = 192.0


def _where(row_number: int, line_number: int) -> str:
    return f"row {row_number} (line {line_number})"


def parse_course_csv(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
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
                        f"values, expected {N_PIXELS} ({IMAGE_SIZE} x {IMAGE_SIZE})"
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
    image_array = np.stack(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 15, 2)
    return image_array, ((kp - PIXELS_PER_UNIT) / PIXELS_PER_UNIT).astype(np.float32)


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


