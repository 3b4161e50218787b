"""The migration chain builds exactly the models' schema, on SQLite and on PostgreSQL, and an
upgrade keeps the rows it finds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from grader.config import Settings
from grader.db import Base, import_all_models
from grader.runtime.migrate import alembic_config, upgrade
from tests.support.services import temporary_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
        return
    with temporary_postgres_database() as url:
        yield Settings(data_dir=tmp_path, database_url=url)


def _drift(settings: Settings) -> list[object]:
    import_all_models()
    engine = sa.create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_head_matches_the_models_and_downgrades_cleanly(settings: Settings) -> None:
    upgrade(settings)
    assert _drift(settings) == []
    command.downgrade(alembic_config(settings), "base")
    engine = sa.create_engine(settings.sqlalchemy_url)
    tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert tables == set()
    upgrade(settings)
    assert _drift(settings) == []


_ROWS_AT_0002 = [
    "INSERT INTO users (id, username, display_name, role, is_active, created_at) "
    "VALUES (1, 'ada', 'Ada', 'student', true, CURRENT_TIMESTAMP)",
    "INSERT INTO exercises (id, slug, title, description, threshold, metric, testset_version, "
    "max_model_bytes, late_policy, queue, leaderboard_visibility, is_published, created_at, "
    "updated_at) VALUES (1, 'ex', 'Ex', '', 100, 'mse', 1, 1000, 'reject', 'cpu', 'hidden', "
    "true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO submissions (id, user_id, exercise_id, model_sha256, model_size, "
    "original_filename, status, attempts, late, created_at) VALUES (1, 1, 1, 'ab', 10, "
    "'m.pt', 'PASSED', 1, false, CURRENT_TIMESTAMP)",
    "INSERT INTO results (id, submission_id, status, score, passed, threshold, model_sha256, "
    "evaluator_version, created_at) VALUES (1, 1, 'PASSED', 329.75, true, 100, 'ab', '1', "
    "CURRENT_TIMESTAMP)",
]


def test_upgrade_to_0003_keeps_scores_and_leaves_their_device_unknown(
    settings: Settings,
) -> None:
    upgrade(settings, "0002")
    engine = sa.create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        for statement in _ROWS_AT_0002:
            conn.execute(sa.text(statement))
    upgrade(settings, "head")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT submission_id, score, device FROM results")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, 329.75, None)]


def test_upgrade_to_0004_brings_unbounded_exercise_settings_back(settings: Settings) -> None:
    upgrade(settings, "0003")
    engine = sa.create_engine(settings.sqlalchemy_url)
    postgres = engine.dialect.name == "postgresql"
    rows = [
        (1, "'Infinity'" if postgres else "9e999", "1e308", "2000000000"),
        (2, "'NaN'" if postgres else "-1", "-5", "0"),
        (3, "50", "30", "5"),
    ]
    with engine.begin() as conn:
        for ex_id, threshold, time_limit, daily in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO exercises (id, slug, title, description, threshold, metric, "
                    "testset_version, max_model_bytes, time_limit_s, daily_limit, late_policy, "
                    "queue, leaderboard_visibility, is_published, created_at, updated_at) VALUES "
                    f"({ex_id}, 'ex{ex_id}', 'Ex', '', {threshold}, 'mse', 1, 1000, {time_limit}, "
                    f"{daily}, 'reject', 'cpu', 'hidden', true, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"
                )
            )
    upgrade(settings, "head")
    with engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT id, threshold, time_limit_s, daily_limit FROM exercises ORDER BY id")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [(1, 100, None, None), (2, 100, None, None), (3, 50, 30, 5)]
