"""The public/private split on SQLite and PostgreSQL: one grading run scores both parts, the
parts partition the test set, the full score is unchanged, and a student never sees the
private score before the reveal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader.config import Settings
from grader.integrity.models import ResultParts, Split
from grader.integrity.split import decisive, private_mask
from grader.submissions import grading
from grader.submissions.models import Result
from tests.service.conftest import Api


def _shows(text: str, number: str) -> bool:
    """`number` as a number of its own in `text`: "2.98" is not shown by a timestamp's
    "22.985705"."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", text) is not None


def test_the_parts_are_disjoint_deterministic_and_form_the_whole_set() -> None:
    sha = "ab" * 32
    mask = private_mask(64, testset_sha256=sha, fraction=0.3)
    assert mask.sum() == 19 and (~mask).sum() == 45  # disjoint, and together all 64
    assert np.array_equal(mask, private_mask(64, testset_sha256=sha, fraction=0.3))
    assert not np.array_equal(mask, private_mask(64, testset_sha256="cd" * 32, fraction=0.3))
    assert not private_mask(64, testset_sha256=sha, fraction=0.0).any()


def test_the_pass_rule_reads_the_part_it_names() -> None:
    result = Result(passed=True)
    parts = ResultParts(public_passed=True, private_passed=False)
    assert decisive(None, None, result) is True
    assert decisive(Split(pass_rule="full"), parts, result) is True
    assert decisive(Split(pass_rule="public"), parts, result) is True
    assert decisive(Split(pass_rule="private"), parts, result) is False


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(21)
    net = torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(),
                              torch.nn.Linear(144, 30), torch.nn.Tanh())
    path = tmp_path_factory.mktemp("split") / "model.pt"
    torch.jit.script(net.eval()).save(str(path))
    return path


def test_one_run_scores_both_parts_and_students_see_the_public_one_until_the_reveal(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, model: Path,
    small_test_set: Path,
) -> None:
    plain, slug = make_exercise(), make_exercise()
    response = admin.put(f"/api/v1/exercises/{slug}/split",
                         json={"private_fraction": 0.5, "pass_rule": "full"})
    assert response.status_code == 200, response.text
    assert response.json()["private_visible_to_students"] is False
    student = make_student()
    sid = int(student.upload(slug, model).json()["id"])
    reference = int(student.upload(plain, model).json()["id"])
    for s in (sid, reference):
        assert grading.grade_submission(settings, s) == "FAILED"

    [row] = admin.get(f"/api/v1/exercises/{slug}/parts").json()
    assert row["public_n"] == row["private_n"] == 32
    public, private, full = row["public_score"], row["private_score"], row["score"]
    assert public != private
    # The full score is the course's, unchanged by the split: the same as without one, and
    # the mean of the two parts' per-image MSEs.
    assert full == student.get(f"/api/v1/submissions/{reference}").json()["score"]
    from grader.grading.testdata.testsets import load_test_set
    from tests.support.course import course_score

    test_set = load_test_set(small_test_set, cache_dir=settings.cache_dir)
    assert full == pytest.approx(course_score(model, test_set), rel=1e-5)
    mse = (1 / (2 * public) + 1 / (2 * private)) / 2
    assert full == pytest.approx(1 / (2 * mse), rel=1e-9)
    # The grade export carries both parts, and only this exercise's export has them.
    import csv
    import io

    grades = list(csv.DictReader(io.StringIO(
        admin.get(f"/api/v1/exercises/{slug}/grades.csv").text)))
    [mine] = [g for g in grades if g["username"] == student.username]
    assert float(mine["public_score"]) == public and float(mine["private_score"]) == private
    assert "public_score" not in admin.get(f"/api/v1/exercises/{plain}/grades.csv").text

    seen = student.get(f"/api/v1/submissions/{sid}/scores").json()
    assert seen["private_hidden"] is True and seen["private_score"] is None
    assert seen["score"] == public and seen["passed"] is None
    for path in (f"/api/v1/submissions/{sid}/scores", f"/api/v1/submissions/{sid}",
                 f"/api/v1/submissions?exercise={slug}", f"/api/v1/exercises/{slug}"):
        assert repr(private) not in student.get(path).text, path
    own = student.get(f"/api/v1/submissions/{sid}").json()
    assert own["score"] == own["result"]["score"] == public
    assert own["passed"] is None and own["result"]["per_keypoint_rmse_px"] is None
    [listed] = student.get(f"/api/v1/submissions?exercise={slug}").json()["items"]
    assert listed["score"] == public
    # "Your best" and the leaderboard rank students by their public score, too.
    assert student.get(f"/api/v1/exercises/{slug}").json()["my_best_score"] == public
    [entry] = student.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    assert entry["is_me"] and entry["best_score"] == public and entry["rank"] == 1
    [seen_by_staff] = admin.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    assert seen_by_staff["best_score"] == full
    assert admin.get(f"/api/v1/submissions/{sid}").json()["score"] == full
    for path in (f"/api/v1/exercises/{slug}/parts", f"/api/v1/exercises/{slug}/parts.csv",
                 f"/api/v1/exercises/{slug}/split"):
        assert student.get(path).status_code == 403
    assert repr(private) in admin.get(f"/api/v1/exercises/{slug}/parts.csv").text
    assert student.post(f"/api/v1/exercises/{slug}/split/reveal").status_code == 403
    # Instructors see both parts at once.
    mine = admin.get(f"/api/v1/submissions/{sid}/scores").json()
    assert mine["private_score"] == private and mine["score"] == full

    # Nor on any of the student's pages (scores are shown with two decimals there).
    from grader.web.formatting import format_score
    from tests.service.test_integrity import _web

    browser = _web(student)
    for path in (f"/submissions/{sid}", "/submissions", f"/exercises/{slug}",
                 f"/exercises/{slug}/leaderboard", "/exercises"):
        page = browser.get(path)
        assert page.status_code == 200, path
        assert not _shows(page.text, format_score(private)), path
        assert repr(private) not in page.text, path
    assert format_score(public) in browser.get(f"/submissions/{sid}").text

    assert admin.post(f"/api/v1/exercises/{slug}/split/reveal").status_code == 200
    revealed = student.get(f"/api/v1/submissions/{sid}/scores").json()
    assert revealed["private_hidden"] is False
    assert revealed["private_score"] == private and revealed["score"] == full
    assert revealed["passed"] is False
    assert student.get(f"/api/v1/submissions/{sid}").json()["score"] == full
    assert student.get(f"/api/v1/exercises/{slug}").json()["my_best_score"] == full
    [entry] = student.get(f"/api/v1/exercises/{slug}/leaderboard").json()["entries"]
    assert entry["best_score"] == full


def test_a_split_is_checked(admin: Api, make_exercise: Any) -> None:
    slug = make_exercise()
    for body in ({"private_fraction": 1.0}, {"private_fraction": -0.1},
                 {"private_fraction": 0.0, "pass_rule": "private"},
                 {"private_fraction": 0.3, "pass_rule": "best"}):
        assert admin.put(f"/api/v1/exercises/{slug}/split", json=body).status_code == 422, body
    assert admin.post(f"/api/v1/exercises/{slug}/split/reveal").status_code == 422


def test_the_split_is_set_and_revealed_from_the_instructor_page(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, model: Path
) -> None:
    from tests.service.test_integrity import _web

    slug = make_exercise()
    student = make_student()
    teacher = _web(admin)
    page = teacher.get(f"/instructor/exercises/{slug}/split")
    assert page.status_code == 200 and 'id="split-form"' in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    saved = teacher.post(f"/instructor/exercises/{slug}/split", data={
        "csrf_token": csrf.group(1), "private_percent": "50", "pass_rule": "public"})
    assert saved.status_code == 303, saved.text
    # The same rule as the API's: what the page set is what the API reads.
    assert admin.get(f"/api/v1/exercises/{slug}/split").json()["private_fraction"] == 0.5
    refused = teacher.post(f"/instructor/exercises/{slug}/split", data={
        "csrf_token": csrf.group(1), "private_percent": "100", "pass_rule": "full"})
    assert refused.status_code == 422
    sid = int(student.upload(slug, model).json()["id"])
    grading.grade_submission(settings, sid)
    page = teacher.get(f"/instructor/exercises/{slug}/split").text
    assert f'href="/submissions/{sid}"' in page and 'id="reveal-form"' in page
    exported = teacher.get(f"/instructor/exercises/{slug}/parts.csv").text.splitlines()
    assert exported[0].startswith("username,submission_id,score,public_score")
    assert exported[1].split(",")[1] == str(sid)
    hidden = student.get(f"/api/v1/submissions/{sid}/scores").json()
    assert hidden["private_hidden"] is True
    teacher.post(f"/instructor/exercises/{slug}/split",
                 data={"csrf_token": csrf.group(1), "reveal": "1"})
    assert student.get(f"/api/v1/submissions/{sid}/scores").json()["private_hidden"] is False
    # Students cannot open it.
    assert _web(student).get(f"/instructor/exercises/{slug}/split").status_code == 403


def test_the_private_score_appears_by_itself_once_the_deadline_has_passed(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, model: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    slug = make_exercise()
    assert admin.put(f"/api/v1/exercises/{slug}/split",
                     json={"private_fraction": 0.5}).status_code == 200
    student = make_student()
    sid = int(student.upload(slug, model).json()["id"])
    grading.grade_submission(settings, sid)
    hidden = student.get(f"/api/v1/submissions/{sid}/scores").json()
    assert hidden["private_hidden"] is True and hidden["private_score"] is None
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert admin.patch(f"/api/v1/exercises/{slug}",
                       json={"deadline": soon.isoformat()}).status_code == 200
    assert student.get(f"/api/v1/submissions/{sid}/scores").json()["private_hidden"] is True
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert admin.patch(f"/api/v1/exercises/{slug}",
                       json={"deadline": past.isoformat()}).status_code == 200
    # No reveal by anyone: the deadline alone shows it.
    shown = student.get(f"/api/v1/submissions/{sid}/scores").json()
    assert shown["private_hidden"] is False and shown["private_score"] is not None
    assert admin.get(f"/api/v1/exercises/{slug}/split").json()["revealed_at"] is None


def test_the_admin_cli_sets_the_split_exports_the_parts_and_reveals(
    settings: Settings, admin: Api, make_student: Any, make_exercise: Any, model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from grader.cli import main
    from grader.config import get_settings

    slug = make_exercise()
    student = make_student()
    monkeypatch.setenv("GRADER_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("GRADER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(main, ["integrity", "split", slug, "--private-fraction", "1"])
        made = CliRunner().invoke(main, ["integrity", "split", slug, "--private-fraction",
                                         "0.25", "--pass-rule", "public"])
        sid = int(student.upload(slug, model).json()["id"])
        grading.grade_submission(settings, sid)
        hidden = student.get(f"/api/v1/submissions/{sid}/scores").json()
        exported = CliRunner().invoke(main, ["integrity", "parts", slug])
        changed = CliRunner().invoke(main, ["integrity", "changes", slug])
        revealed = CliRunner().invoke(main, ["integrity", "reveal", slug])
        unknown = CliRunner().invoke(main, ["integrity", "parts", "no-such-exercise"])
    finally:
        get_settings.cache_clear()
    assert refused.exit_code != 0 and made.exit_code == 0, (refused.output, made.output)
    split = admin.get(f"/api/v1/exercises/{slug}/split").json()
    assert split["private_fraction"] == 0.25 and split["pass_rule"] == "public"
    assert hidden["private_hidden"] is True
    lines = exported.output.strip().splitlines()
    assert exported.exit_code == 0 and lines[0].startswith("username,submission_id,score,")
    [row] = [line for line in lines[1:] if line.split(",")[1] == str(sid)]
    [api_row] = admin.get(f"/api/v1/exercises/{slug}/parts").json()
    assert repr(api_row["private_score"]) in row or f"{api_row['private_score']}" in row
    assert changed.exit_code == 0 and changed.output.splitlines()[0].count(",") >= 3
    assert revealed.exit_code == 0, revealed.output
    assert student.get(f"/api/v1/submissions/{sid}/scores").json()["private_hidden"] is False
    assert unknown.exit_code != 0
