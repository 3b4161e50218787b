from __future__ import annotations

from pathlib import Path

import pytest

from grader.config import Settings
from grader.grading.testdata.faces import generate_faces, write_course_csv
from grader.grading.testdata.testsets import TestSet, load_test_set

SMALL_COUNT = 64


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic `test` faces with their own seed (kept small so the suite stays fast)."""
    path = tmp_path_factory.mktemp("testset") / "small.csv"
    images, keypoints = generate_faces(split="test", count=SMALL_COUNT, seed=1234)
    write_course_csv(path, images, keypoints)
    return path


@pytest.fixture(scope="session")
def small_test_set(small_csv: Path) -> TestSet:
    return load_test_set(small_csv)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", sandbox_enabled=False)
