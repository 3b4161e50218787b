"""integrity_pairs: an index on the second submission, so that dropping a regraded
submission's pairs does not scan the table

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_integrity_pairs_second", "integrity_pairs", ["second_submission_id"])


def downgrade() -> None:
    op.drop_index("ix_integrity_pairs_second", table_name="integrity_pairs")
