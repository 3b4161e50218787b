"""integrity: prediction fingerprints, flagged pairs, public baselines, replaced results,
public/private split

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _submission(name: str = "submission_id") -> sa.Column:
    return sa.Column(
        name, sa.Integer(), sa.ForeignKey("submissions.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "integrity_fingerprints",
        sa.Column("id", sa.Integer(), primary_key=True),
        _submission(),
        sa.Column("exercise_id", sa.Integer(),
                  sa.ForeignKey("exercises.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("testset_version", sa.Integer(), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("submission_id"),
    )
    op.create_index("ix_integrity_fingerprints_exercise_version", "integrity_fingerprints",
                    ["exercise_id", "testset_version"])
    op.create_table(
        "integrity_pairs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("exercise_id", sa.Integer(),
                  sa.ForeignKey("exercises.id", ondelete="CASCADE"), nullable=False),
        _submission("first_submission_id"),
        _submission("second_submission_id"),
        sa.Column("similarity", sa.Float(), nullable=True),
        sa.Column("identical_file", sa.Boolean(), nullable=False),
        sa.Column("testset_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("first_submission_id", "second_submission_id"),
    )
    op.create_index("ix_integrity_pairs_exercise", "integrity_pairs", ["exercise_id"])
    op.create_table(
        "integrity_baselines",
        sa.Column("id", sa.Integer(), primary_key=True),
        _submission(),
        sa.Column("marked_by_id", sa.Integer(),
                  sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("submission_id"),
    )
    op.create_table(
        "result_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        _submission(),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("testset_sha256", sa.String(length=64), nullable=True),
        sa.Column("testset_version", sa.Integer(), nullable=True),
        sa.Column("evaluator_version", sa.String(length=32), nullable=False),
        sa.Column("torch_version", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=32), nullable=True),
        sa.Column("graded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_result_history_submission", "result_history", ["submission_id"])
    op.create_table(
        "integrity_splits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("exercise_id", sa.Integer(),
                  sa.ForeignKey("exercises.id", ondelete="CASCADE"), nullable=False),
        sa.Column("private_fraction", sa.Float(), nullable=False),
        sa.Column("pass_rule", sa.String(length=16), nullable=False),
        sa.Column("revealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("exercise_id"),
    )
    op.create_table(
        "integrity_result_parts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _submission(),
        sa.Column("testset_version", sa.Integer(), nullable=False),
        sa.Column("private_fraction", sa.Float(), nullable=False),
        sa.Column("public_score", sa.Float(), nullable=True),
        sa.Column("public_passed", sa.Boolean(), nullable=True),
        sa.Column("public_n", sa.Integer(), nullable=False),
        sa.Column("private_score", sa.Float(), nullable=True),
        sa.Column("private_passed", sa.Boolean(), nullable=True),
        sa.Column("private_n", sa.Integer(), nullable=False),
        sa.UniqueConstraint("submission_id"),
    )


def downgrade() -> None:
    op.drop_table("integrity_result_parts")
    op.drop_table("integrity_splits")
    op.drop_index("ix_result_history_submission", table_name="result_history")
    op.drop_table("result_history")
    op.drop_table("integrity_baselines")
    op.drop_index("ix_integrity_pairs_exercise", table_name="integrity_pairs")
    op.drop_table("integrity_pairs")
    op.drop_index("ix_integrity_fingerprints_exercise_version",
                  table_name="integrity_fingerprints")
    op.drop_table("integrity_fingerprints")
