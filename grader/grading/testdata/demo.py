"""The demo exercises' hidden test sets: synthetic, from a fixed seed, made on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.config import Settings

DEMO_TEST_SET_COUNT = 1000


def demo_test_set_path(settings: Settings, kind: str = "keypoints") -> Path:
    """The demo exercise's hidden test set of `kind`, generated on first use."""
    from grader.grading.kinds import get_kind

    spec = get_kind(kind)
    path = settings.testsets_dir / spec.demo_file_name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        spec.write_synthetic(path, count=DEMO_TEST_SET_COUNT)
    return path
