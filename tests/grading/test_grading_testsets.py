"""Course CSVs load exactly; malformed ones get one clear error naming the row and the problem."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from grader.grading.kinds.keypoints import KEYPOINT_COLUMNS, KEYPOINT_NAMES
from grader.grading.testdata.faces import generate_faces, write_course_csv
from grader.grading.testdata.testsets import TestSetError, load_test_set


def rows_of(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture
def good_rows(tmp_path: Path) -> list[list[str]]:
    images, keypoints = generate_faces(split="val", count=4, seed=7)
    path = tmp_path / "good.csv"
    write_course_csv(path, images, keypoints)
    return rows_of(path)


def test_columns_are_kaggles_in_course_order() -> None:
    assert len(KEYPOINT_COLUMNS) == 30 and len(KEYPOINT_NAMES) == 15
    assert KEYPOINT_COLUMNS[:4] == (
        "left_eye_center_x",
        "left_eye_center_y",
        "right_eye_center_x",
        "right_eye_center_y",
    )
    assert KEYPOINT_COLUMNS[-1] == "mouth_center_bottom_lip_y"


def test_load_normalises_and_caches(tmp_path: Path) -> None:
    images, keypoints = generate_faces(split="val", count=10, seed=3)
    path = tmp_path / "t.csv"
    write_course_csv(path, images, keypoints)
    cache = tmp_path / "cache"

    ts = load_test_set(path, cache_dir=cache)
    assert len(ts) == 10 and ts.images.dtype == np.uint8 and ts.labels.dtype == np.float32
    np.testing.assert_array_equal(ts.images, images)
    np.testing.assert_allclose(ts.labels, (keypoints - 48) / 48, atol=1e-6)
    cached = list(cache.glob("*.npz"))
    assert len(cached) == 1 and ts.sha256 in cached[0].name

    again = load_test_set(path, cache_dir=cache)
    np.testing.assert_array_equal(again.labels, ts.labels)
    assert again.sha256 == ts.sha256


def test_rows_with_missing_keypoints_are_dropped(
    tmp_path: Path, good_rows: list[list[str]]
) -> None:
    good_rows[2][5] = ""  # data row 2 loses one keypoint
    ts = load_test_set(write_rows(tmp_path / "t.csv", good_rows))
    assert len(ts) == 3


def test_columns_may_come_in_any_order(tmp_path: Path, good_rows: list[list[str]]) -> None:
    reordered = [[row[-1], *row[:-1]] for row in good_rows]
    a = load_test_set(write_rows(tmp_path / "a.csv", good_rows))
    b = load_test_set(write_rows(tmp_path / "b.csv", reordered))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)


def check_error(path: Path, *needles: str) -> None:
    with pytest.raises(TestSetError) as info:
        load_test_set(path)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_wrong_pixel_count(tmp_path: Path, good_rows: list[list[str]]) -> None:
    good_rows[3][-1] = " ".join(good_rows[3][-1].split()[:-5])
    check_error(write_rows(tmp_path / "t.csv", good_rows), "row 3 (line 4)", "9211 pixel values")


def test_non_numeric_keypoint(tmp_path: Path, good_rows: list[list[str]]) -> None:
    good_rows[1][7] = "abc"
    check_error(
        write_rows(tmp_path / "t.csv", good_rows), "row 1", KEYPOINT_COLUMNS[7], "not a number"
    )


def test_non_numeric_pixel(tmp_path: Path, good_rows: list[list[str]]) -> None:
    pixels = good_rows[2][-1].split()
    pixels[99] = "x7"
    good_rows[2][-1] = " ".join(pixels)
    check_error(write_rows(tmp_path / "t.csv", good_rows), "row 2", "pixel 100", "'x7'")


def test_pixel_out_of_range(tmp_path: Path, good_rows: list[list[str]]) -> None:
    pixels = good_rows[1][-1].split()
    pixels[0] = "256"
    good_rows[1][-1] = " ".join(pixels)
    check_error(write_rows(tmp_path / "t.csv", good_rows), "row 1", "pixel 1", "0 to 255")


def test_missing_column(tmp_path: Path, good_rows: list[list[str]]) -> None:
    rows = [row[:3] + row[4:] for row in good_rows]  # drop right_eye_center_y
    check_error(write_rows(tmp_path / "t.csv", rows), "missing column", "right_eye_center_y")


def test_no_usable_rows(tmp_path: Path, good_rows: list[list[str]]) -> None:
    for row in good_rows[1:]:
        row[0] = ""
    check_error(write_rows(tmp_path / "t.csv", good_rows), "no usable rows")


def test_header_only_has_no_usable_rows(tmp_path: Path, good_rows: list[list[str]]) -> None:
    check_error(write_rows(tmp_path / "t.csv", good_rows[:1]), "no usable rows")


def test_empty_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    check_error(tmp_path / "empty.csv", "empty")
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TestSetError):
        load_test_set(tmp_path / "bin.csv")


def test_ragged_row(tmp_path: Path, good_rows: list[list[str]]) -> None:
    good_rows[2] = good_rows[2][:10]
    check_error(write_rows(tmp_path / "t.csv", good_rows), "row 2", "10 fields")
