"""Hand-off offers (``omoi_ray.core.handoff``): table ``handoffs``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Self-contained on purpose (see 0001). ``down_revision`` may be rechained at merge.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "handoffs",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("from_agent", sa.String(128), nullable=False),
        sa.Column("from_incarnation", sa.String(64), nullable=False),
        sa.Column("targets", JSON, nullable=False),
        sa.Column("capabilities", JSON, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("context", JSON, nullable=True),
        sa.Column("deadline", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("thread_id", sa.String(256), nullable=True),
        sa.Column("declines", JSON, nullable=True),
        sa.Column("accepted_by", sa.String(128), nullable=True),
        sa.Column("new_attempt", sa.Integer(), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_handoffs"),
    )
    op.create_index("ix_handoffs_task_id", "handoffs", ["task_id"])
    op.create_index("ix_handoffs_status", "handoffs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_status", table_name="handoffs")
    op.drop_index("ix_handoffs_task_id", table_name="handoffs")
    op.drop_table("handoffs")
