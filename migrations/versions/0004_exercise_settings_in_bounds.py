"""exercises: bring settings stored before they were bounded back within bounds

A threshold that is NaN, infinite or negative made the exercise impossible to pass (and
reads back as null); it becomes the default, 100. A time limit or daily limit that is not a
positive finite number of sane size becomes null (the server's default time limit; no daily
limit). Schema unchanged.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT BETWEEN is true for NaN on PostgreSQL (NaN sorts above every number) and for
    # infinities on both databases; SQLite cannot store NaN in the first place.
    op.execute("UPDATE exercises SET threshold = 100 WHERE NOT (threshold BETWEEN 0 AND 1e9)")
    op.execute(
        "UPDATE exercises SET time_limit_s = NULL "
        "WHERE time_limit_s IS NOT NULL AND NOT (time_limit_s BETWEEN 1 AND 1e6)"
    )
    op.execute(
        "UPDATE exercises SET daily_limit = NULL "
        "WHERE daily_limit IS NOT NULL AND NOT (daily_limit BETWEEN 1 AND 10000)"
    )


def downgrade() -> None:
    pass  # the old values were unusable; nothing to restore
