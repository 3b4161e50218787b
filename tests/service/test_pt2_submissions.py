"""A torch.export program (.pt2) through the API: accepted by content whatever its name,
recorded as such, graded to the same score as the same model in TorchScript (and as the
course's loop); a hostile one is a 422 with its reason and nothing is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grader.config import Settings
from grader.grading.testdata.testsets import load_test_set
from grader.submissions import grading
from tests.sandbox.hostile_pt2 import pickled_sample_inputs, rewrite
from tests.support.course import course_score
from tests.support.zoo import export, export_program


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("both")
    # Named .pt and .zip on purpose: the format is told by content, not by name.
    return (export("tiny_cnn", directory / "scripted.zip"),
            export_program("tiny_cnn", directory / "program.pt"))


def test_both_formats_are_recorded_and_score_alike(
    settings: Settings, make_student: Any, make_exercise: Any, both: tuple[Path, Path],
    small_test_set: Path,
) -> None:
    student, slug = make_student(), make_exercise()
    scores = {}
    for path, expected_format in zip(both, ("torchscript", "pt2"), strict=True):
        created = student.upload(slug, path)
        assert created.status_code in (201, 202), created.text
        sid = created.json()["id"]
        assert student.get(f"/api/v1/submissions/{sid}").json()["model_format"] == expected_format
        grading.grade_submission(settings, sid)
        done = student.get(f"/api/v1/submissions/{sid}").json()
        assert done["failure_reason"] is None, done["failure_message"]
        scores[expected_format] = done["score"]
    expected = course_score(both[1], load_test_set(small_test_set))
    for score in scores.values():
        assert abs(score - expected) <= 1e-5 * expected


def test_a_hostile_program_is_refused_at_upload(
    make_student: Any, make_exercise: Any, both: tuple[Path, Path], tmp_path: Path
) -> None:
    student, slug = make_student(), make_exercise()
    hostile = rewrite(both[1], tmp_path / "m.pt2", pickled_sample_inputs(tmp_path / "x"))
    response = student.upload(slug, hostile)
    assert response.status_code == 422
    assert "LOAD_ERROR" in response.text and "pickle" in response.text
    assert student.get(f"/api/v1/submissions?exercise={slug}").json()["items"] == []
