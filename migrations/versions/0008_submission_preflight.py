"""submissions.preflight_*: the quick check at upload (loads, runs on public faces)

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: submissions made before this migration had no pre-flight.
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("preflight_status", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("preflight_message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("preflight_batch_one_only", sa.Boolean(), nullable=True))
        batch.add_column(
            sa.Column("preflight_finished_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        for column in (
            "preflight_finished_at", "preflight_batch_one_only", "preflight_message",
            "preflight_status",
        ):
            batch.drop_column(column)
