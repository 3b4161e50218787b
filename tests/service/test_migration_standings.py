"""Migration 0010 moves result previews into their own table and fills the standings from the
history; its downgrade puts the previews back (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from grader.config import Settings
from grader.runtime.migrate import alembic_config, upgrade
from tests.support.services import temporary_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
        return
    with temporary_postgres_database() as url:
        yield Settings(data_dir=tmp_path, database_url=url)


PREVIEW = [[[10.5, 20.25], [30.0, 40.0]]]

_ROWS_AT_0009 = [
    "INSERT INTO users (id, username, display_name, role, is_active, created_at) VALUES "
    "(1, 'ada', 'Ada', 'student', true, CURRENT_TIMESTAMP), "
    "(2, 'bob', 'Bob', 'student', true, CURRENT_TIMESTAMP), "
    "(3, 'cy', 'Cy', 'student', true, CURRENT_TIMESTAMP)",
    "INSERT INTO exercises (id, slug, title, description, threshold, kind, testset_version, "
    "max_model_bytes, late_policy, queue, leaderboard_visibility, is_published, created_at, "
    "updated_at) VALUES (1, 'ex', 'Ex', '', 100, 'keypoints', 1, 1000, 'reject', 'cpu', "
    "'hidden', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    # ada: two graded (the better one is the later), one queued; bob: one given up (ours);
    # cy: one failed its check, no result.
    "INSERT INTO submissions (id, user_id, exercise_id, model_sha256, model_size, "
    "original_filename, status, attempts, late, failure_reason, created_at) VALUES "
    "(1, 1, 1, 'a1', 10, 'm.pt', 'FAILED', 1, false, NULL, '2026-01-01 10:00:00'), "
    "(2, 1, 1, 'a2', 10, 'm.pt', 'PASSED', 1, true, NULL, '2026-01-02 10:00:00'), "
    "(3, 1, 1, 'a3', 10, 'm.pt', 'QUEUED', 0, true, NULL, '2026-01-03 10:00:00'), "
    "(4, 2, 1, 'b1', 10, 'm.pt', 'ERROR', 3, false, 'INFRA_ERROR', '2026-01-01 11:00:00'), "
    "(5, 3, 1, 'c1', 10, 'm.pt', 'ERROR', 1, false, 'BAD_OUTPUT', '2026-01-01 12:00:00')",
    "INSERT INTO results (id, submission_id, status, score, passed, threshold, model_sha256, "
    "evaluator_version, preview_keypoints, created_at) VALUES "
    "(1, 1, 'FAILED', 50.5, false, 100, 'a1', '1', NULL, CURRENT_TIMESTAMP), "
    f"(2, 2, 'PASSED', 150.25, true, 100, 'a2', '1', '{json.dumps(PREVIEW)}', "
    "CURRENT_TIMESTAMP), "
    "(3, 5, 'BAD_OUTPUT', NULL, false, 100, 'c1', '1', NULL, CURRENT_TIMESTAMP)",
]


def test_0010_moves_previews_fills_standings_and_downgrades(settings: Settings) -> None:
    upgrade(settings, "0009")
    engine = sa.create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        for statement in _ROWS_AT_0009:
            conn.execute(sa.text(statement))
    upgrade(settings, "0010")
    with engine.connect() as conn:
        previews = conn.execute(sa.text("SELECT result_id, data FROM result_previews")).all()
        standings = conn.execute(
            sa.text(
                "SELECT user_id, attempts, best_result_id, best_score, passed, best_late "
                "FROM standings ORDER BY user_id"
            )
        ).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("results")}
    assert [(r[0], _json(r[1])) for r in previews] == [(2, PREVIEW)]
    assert "preview_keypoints" not in columns
    # bob's only submission was our failure: no standing; cy has attempts but no score.
    assert [tuple(r) for r in standings] == [
        (1, 3, 2, 150.25, True, True),
        (3, 1, None, None, False, False),
    ]
    command.downgrade(alembic_config(settings), "0009")
    with engine.connect() as conn:
        back = conn.execute(
            sa.text("SELECT id, preview_keypoints FROM results ORDER BY id")
        ).all()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert [(r[0], _json(r[1])) for r in back] == [(1, None), (2, PREVIEW), (3, None)]
    assert "standings" not in tables and "result_previews" not in tables


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value
