"""A torch.export program (.pt2) through the API: accepted by content whatever its name,
recorded as such, graded to the same score as the same model in TorchScript (and as the
course's loop); a hostile one is a 422 with its reason and nothing is stored."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from grader.config import Settings
from grader.grading.testdata.testsets import load_test_set
from grader.submissions import grading
from grader.submissions.preview import PREVIEW_IMAGES
from tests.sandbox.hostile_pt2 import pickled_sample_inputs, rewrite
from tests.service.conftest import Api
from tests.service.test_integrity import _web
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


def test_preview_leaderboard_export_and_rescore_treat_a_program_alike(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any,
    both: tuple[Path, Path],
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, both[1]).json()["id"]
    grading.grade_submission(settings, sid)
    first = student.get(f"/api/v1/submissions/{sid}").json()
    assert first["model_format"] == "pt2" and first["failure_reason"] is None
    # The picture on the page is drawn from the program's own predictions on public faces.
    page = _web(student).get(f"/submissions/{sid}").text
    assert page.count("<circle ") == PREVIEW_IMAGES * 15
    [entry] = admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    assert entry["best_score"] == first["score"]
    grades = list(csv.DictReader(io.StringIO(
        admin.get(f"/api/v1/exercises/{slug}/grades.csv").text)))
    [row] = [g for g in grades if g["username"] == student.username]
    assert float(row["best_score"]) == pytest.approx(first["score"], rel=1e-9)

    assert admin.post(f"/api/v1/submissions/{sid}/rescore").status_code in (200, 202)
    grading.grade_submission(settings, sid)
    again = student.get(f"/api/v1/submissions/{sid}").json()
    assert again["status"] == first["status"] and again["model_format"] == "pt2"
    assert again["score"] == pytest.approx(first["score"], rel=1e-5)


def test_a_hostile_program_is_refused_at_upload(
    make_student: Any, make_exercise: Any, both: tuple[Path, Path], tmp_path: Path
) -> None:
    student, slug = make_student(), make_exercise()
    hostile = rewrite(both[1], tmp_path / "m.pt2", pickled_sample_inputs(tmp_path / "x"))
    response = student.upload(slug, hostile)
    assert response.status_code == 422
    assert "LOAD_ERROR" in response.text and "pickle" in response.text
    assert student.get(f"/api/v1/submissions?exercise={slug}").json()["items"] == []
