"""exercises.kind replaces exercises.metric: each exercise names its kind of task

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every exercise so far was facial keypoints; `metric` was stored and never read.
    with op.batch_alter_table("exercises") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=32), nullable=False, server_default="keypoints")
        )
        batch.drop_column("metric")


def downgrade() -> None:
    with op.batch_alter_table("exercises") as batch:
        batch.add_column(
            sa.Column(
                "metric", sa.String(length=32), nullable=False, server_default="course_score"
            )
        )
        batch.drop_column("kind")
