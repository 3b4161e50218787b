"""standings (one row per student and exercise) and result_previews (preview JSON out of results)

The leaderboard, the instructor dashboard and the grades export read `standings` instead of
the whole history; the submission page reads a result's preview from `result_previews`, so the
rows the listings scan stay small. Existing data is moved both ways.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The standings rule as of this revision (leaderboard.service.recompute_standings): counted
# attempts (all but ERROR / INFRA_ERROR), the latest submission, and the best graded result
# (highest score, earliest submission, lowest id). Frozen here like the schema it fills.
_FILL_STANDINGS = """
INSERT INTO standings (exercise_id, user_id, attempts, last_submitted_at, best_result_id,
                       best_score, passed, best_submitted_at, best_late)
SELECT t.exercise_id, t.user_id, t.attempts, t.last_submitted_at, b.result_id,
       b.score, COALESCE(b.passed, false), b.created_at, COALESCE(b.late, false)
FROM (
    SELECT exercise_id, user_id,
           COUNT(CASE WHEN status != 'ERROR' OR COALESCE(failure_reason, '') != 'INFRA_ERROR'
                      THEN id END) AS attempts,
           MAX(created_at) AS last_submitted_at
    FROM submissions GROUP BY exercise_id, user_id
) AS t
LEFT OUTER JOIN (
    SELECT * FROM (
        SELECT s.exercise_id, s.user_id, r.id AS result_id, r.score, r.passed, s.created_at,
               s.late,
               ROW_NUMBER() OVER (PARTITION BY s.exercise_id, s.user_id
                                  ORDER BY r.score DESC, s.created_at, s.id) AS place
        FROM submissions AS s JOIN results AS r ON r.submission_id = s.id
        WHERE r.score IS NOT NULL
    ) AS ranked WHERE place = 1
) AS b ON b.exercise_id = t.exercise_id AND b.user_id = t.user_id
WHERE t.attempts > 0
"""


def upgrade() -> None:
    op.create_table(
        "result_previews",
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"],
            name=op.f("fk_result_previews_result_id_results"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("result_id", name=op.f("pk_result_previews")),
    )
    op.execute(
        "INSERT INTO result_previews (result_id, data) "
        "SELECT id, preview_keypoints FROM results WHERE preview_keypoints IS NOT NULL"
    )
    with op.batch_alter_table("results") as batch:
        batch.drop_column("preview_keypoints")

    op.create_table(
        "standings",
        sa.Column("exercise_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("best_result_id", sa.Integer(), nullable=True),
        sa.Column("best_score", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("best_submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("best_late", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exercise_id"], ["exercises.id"],
            name=op.f("fk_standings_exercise_id_exercises"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_standings_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["best_result_id"], ["results.id"],
            name=op.f("fk_standings_best_result_id_results"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("exercise_id", "user_id", name=op.f("pk_standings")),
    )
    op.execute(_FILL_STANDINGS)

    op.create_index(
        "ix_submissions_created_at_id", "submissions", ["created_at", "id"], unique=False
    )
    op.create_index(
        "ix_submissions_exercise_created",
        "submissions",
        ["exercise_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_submissions_exercise_created", table_name="submissions")
    op.drop_index("ix_submissions_created_at_id", table_name="submissions")
    op.drop_table("standings")
    # Adding a nullable column needs no table copy, even on SQLite.
    op.add_column("results", sa.Column("preview_keypoints", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE results SET preview_keypoints = "
        "(SELECT data FROM result_previews WHERE result_previews.result_id = results.id)"
    )
    op.drop_table("result_previews")
