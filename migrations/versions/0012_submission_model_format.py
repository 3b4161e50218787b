"""submissions.model_format: a TorchScript archive or a torch.export program (.pt2)

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every submission so far was TorchScript: the only format accepted until now.
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(
            sa.Column(
                "model_format", sa.String(length=16), nullable=False,
                server_default="torchscript",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("model_format")
