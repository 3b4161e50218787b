"""The instructor's standings table and the student's leaderboard page show each student's
best graded result, from the standings table, with names escaped and neutralised."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from grader.auth import service as auth_service
from grader.config import Settings
from grader.db import session_scope
from grader.submissions import grading
from grader.submissions.models import Result
from grader.web.formatting import format_score
from tests.support.models import write_linear_model
from tests.web.conftest import PASSWORD, browser, log_in, upload_by_form


def test_pages_show_each_students_best(
    web_app: TestClient, web_settings: Settings, instructor: TestClient, tmp_path: Path
) -> None:
    username = f"best-{uuid.uuid4().hex[:6]}"
    with session_scope(web_settings.sqlalchemy_url) as session:
        auth_service.create_user(
            session, actor=None, username=username, password=PASSWORD,
            display_name="<script>x</script>\u202e",
        )
    client = log_in(browser(web_app), username)

    def submit(model: Path) -> float:
        created = upload_by_form(client, "web-ex", model, "m.pt")
        assert created.status_code == 202, created.text
        grading.grade_submission(web_settings, created.json()["id"])
        with session_scope(web_settings.sqlalchemy_url, write=False) as session:
            score = session.scalar(
                select(Result.score).where(Result.submission_id == created.json()["id"])
            )
        assert score is not None
        return score

    models = [write_linear_model(tmp_path / f"{seed}.pt", seed=seed) for seed in (11, 12)]
    scores = [submit(m) for m in models]
    assert scores[0] != scores[1]
    # The latest submission is the worse model again: the best is not the latest.
    submit(models[scores.index(min(scores))])
    best, other = format_score(max(scores)), format_score(min(scores))

    page = instructor.get("/instructor/exercises/web-ex").text
    row = next(r for r in page.split("<tr>") if f"/students/{username}\"" in r)
    assert f">{best}</td>" in row and f">{other}</td>" not in row
    assert '<td class="num" data-value="3">3</td>' in row  # attempts
    assert "&lt;script&gt;x&lt;/script&gt;&lt;U+202E&gt;" in row and "<script>x" not in page

    mine = client.get("/exercises/web-ex/leaderboard").text
    me = next(r for r in mine.split("<tr") if "you</span>" in r)
    assert f">{best}</td>" in me
