"""results.device: where the model ran (cpu, cuda, cuda:1), recorded by the worker

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: results graded before this migration did not record it.
    op.add_column("results", sa.Column("device", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("device")
