"""results.preview_keypoints: predicted keypoints on public sample faces (web picture)

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding a nullable column needs no table copy, even on SQLite.
    op.add_column("results", sa.Column("preview_keypoints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("preview_keypoints")
