"""Routing by task type: ``agents.handles``, the task types an agent has handlers for; and
``tasks.upstream_cancelled``, whether an ``upstream_failed`` task's root was cancelled.

Revision ID: 0012
Revises: 0011 (tickets)
Create Date: 2026-12-01

A JSON list of type names, or NULL for an agent with a default handler (every type). Rows
written before this revision stay NULL: such an agent handles every type, as it did.

``upstream_cancelled``: true for an ``upstream_failed`` task whose root (``upstream``) was
cancelled, not failed (``core.tickets``: a cancel never blocks a ticket, directly or through
others). Rows written before this revision read false, as they were judged.
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
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("upstream_cancelled", sa.Boolean, nullable=True, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("upstream_cancelled")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("handles")
