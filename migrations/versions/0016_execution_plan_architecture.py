"""execution_plans.architecture: a plan chosen for one file is tried first for another file
of the same architecture

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: plans remembered before this migration have no digest and are found by file.
    with op.batch_alter_table("execution_plans") as batch:
        batch.add_column(sa.Column("architecture", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_execution_plans_architecture", "execution_plans",
        ["architecture", "device", "threads", "torch_version", "updated_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_execution_plans_architecture", table_name="execution_plans")
    with op.batch_alter_table("execution_plans") as batch:
        batch.drop_column("architecture")
