"""results: the per-part breakdown of any kind (`parts`, was per_keypoint_rmse_px) and the
kind's details (a confusion matrix, the mean MSE)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.alter_column("per_keypoint_rmse_px", new_column_name="parts")
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("details")
        batch.alter_column("parts", new_column_name="per_keypoint_rmse_px")
