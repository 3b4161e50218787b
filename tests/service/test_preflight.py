"""The pre-flight at upload, called in-process on SQLite and PostgreSQL: named failures end
the submission at once without using up the daily limit, a batch-1-only model is told so,
and a grading that starts first makes the pre-flight moot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grader.auth.models import User
from grader.config import Settings
from grader.db import session_scope
from grader.errors import RateLimited
from grader.exercises.models import Exercise
from grader.submissions import grading, preflight, service
from tests.sandbox.hostile_models import NaNOutput, WrongShape, save_scripted
from tests.support.models import write_linear_model
from tests.support.zoo import export


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preflight")
    return {
        "good": write_linear_model(root / "good.pt", seed=5),
        "wrong_shape": save_scripted(WrongShape(), root / "wrong_shape.pt"),
        "nan": save_scripted(NaNOutput(), root / "nan.pt"),
        "batch1": export("batch1_only", root / "batch1.pt"),
        "garbage": _broken_code(write_linear_model(root / "linear.pt"), root / "garbage.pt"),
    }


def _broken_code(source: Path, path: Path) -> Path:
    """A TorchScript archive whose code no longer compiles: it passes the archive check at
    upload and fails in torch.jit.load."""
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if "/code/" in item.filename and item.filename.endswith(".py"):
                data = b"def forward(self, x: Tensor) -> Tensor:\n    return x +\n"
            new.writestr(item, data)
    return path


@pytest.mark.parametrize(
    ("model", "kind"),
    [("wrong_shape", "BAD_OUTPUT"), ("nan", "NON_FINITE"), ("garbage", "LOAD_ERROR")],
)
def test_a_named_failure_ends_the_submission_at_once(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path],
    model: str, kind: str,
) -> None:
    student, slug = make_student(), make_exercise()
    sent = student.upload(slug, models[model])
    assert sent.status_code == 202, sent.text
    sid = sent.json()["id"]
    assert student.get(f"/api/v1/submissions/{sid}").json()["preflight"]["status"] == "PENDING"
    assert preflight.run_preflight(settings, sid) == kind
    body = student.get(f"/api/v1/submissions/{sid}").json()
    assert body["status"] == "ERROR" and body["failure_reason"] == kind
    assert body["preflight"]["status"] == kind and body["preflight"]["message"]
    assert body["failure_message"] == body["preflight"]["message"]
    # The grading task that follows finds it finished and does nothing.
    assert grading.grade_submission(settings, sid) == "skipped"
    assert student.get(f"/api/v1/submissions/{sid}").json()["result"] is None


def test_a_failed_preflight_does_not_use_up_the_daily_limit(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path]
) -> None:
    student, slug = make_student(), make_exercise(daily_limit=1)
    broken = student.upload(slug, models["wrong_shape"]).json()["id"]
    assert preflight.run_preflight(settings, broken) == "BAD_OUTPUT"
    good = student.upload(slug, models["good"])
    assert good.status_code == 202, good.text
    assert preflight.run_preflight(settings, good.json()["id"]) == "PASSED"
    assert student.upload(slug, models["good"]).status_code == 429  # the good one counted


def test_failed_preflights_have_a_daily_cap_of_their_own(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path]
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, models["wrong_shape"]).json()["id"]
    assert preflight.run_preflight(settings, sid) == "BAD_OUTPUT"
    capped = settings.model_copy(update={"preflight_failures_per_day": 1})
    with session_scope(settings.sqlalchemy_url) as session:
        user = session.query(User).filter_by(username=student.username).one()
        exercise = session.query(Exercise).filter_by(slug=slug).one()
        with pytest.raises(RateLimited, match="failed their check"):
            service.check_can_submit(session, user=user, exercise=exercise, settings=capped)
        service.check_can_submit(session, user=user, exercise=exercise, settings=settings)


def test_a_batch_one_model_passes_and_is_told_so(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path]
) -> None:
    student, slug = make_student(), make_exercise()
    for model, batch_one_only in (("batch1", True), ("good", False)):
        sid = student.upload(slug, models[model]).json()["id"]
        assert preflight.run_preflight(settings, sid) == "PASSED"
        body = student.get(f"/api/v1/submissions/{sid}").json()
        assert body["status"] == "QUEUED"
        assert body["preflight"]["status"] == "PASSED"
        assert body["preflight"]["batch_one_only"] is batch_one_only
        # Passing the pre-flight changes nothing about the grading that follows.
        assert grading.grade_submission(settings, sid) in ("PASSED", "FAILED")


def test_a_grading_that_starts_first_makes_the_preflight_moot(
    settings: Settings, make_student: Any, make_exercise: Any, models: dict[str, Path]
) -> None:
    student, slug = make_student(), make_exercise()
    sid = student.upload(slug, models["wrong_shape"]).json()["id"]
    assert grading.grade_submission(settings, sid) == "ERROR"
    body = student.get(f"/api/v1/submissions/{sid}").json()
    assert body["preflight"]["status"] == "SKIPPED" and body["failure_reason"] == "BAD_OUTPUT"
    assert preflight.run_preflight(settings, sid) == "not pending"
