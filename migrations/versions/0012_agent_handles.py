"""Routing by task type: ``agents.handles``, the task types an agent has handlers for.

Revision ID: 0012
Revises: 0011 (tickets)
Create Date: 2026-12-01

A JSON list of type names, or NULL for an agent with a default handler (every type). Rows
written before this revision stay NULL: such an agent handles every type, as it did.
Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("handles", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("handles")
