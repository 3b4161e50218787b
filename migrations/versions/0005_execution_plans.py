"""results.plan and execution_plans: how the sandbox ran each model, reused on a rescore

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: results graded before this migration did not record a plan.
    op.add_column("results", sa.Column("plan", sa.JSON(), nullable=True))
    op.create_table(
        "execution_plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("torch_version", sa.String(length=64), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_plans")),
        sa.UniqueConstraint(
            "model_sha256", "device", "threads", "torch_version",
            name=op.f("uq_execution_plans_model_sha256"),
        ),
    )


def downgrade() -> None:
    op.drop_table("execution_plans")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("plan")
