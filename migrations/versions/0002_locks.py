"""Locks: resources with fencing-token counters, grants, waiting requests; task-declared locks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("locks", JSON, nullable=True))
    op.create_table(
        "lock_resources",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(512), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "resource_id", name="pk_lock_resources"),
    )
    op.create_table(
        "lock_grants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(512), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("ttl", sa.Float(), nullable=False),
        sa.Column("granted_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("task_id", sa.String(128), nullable=True),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lock_grants"),
    )
    op.create_index(
        "uq_lock_grants_one_active_exclusive",
        "lock_grants",
        ["resource_type", "resource_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL AND mode = 'exclusive'"),
        sqlite_where=sa.text("ended_at IS NULL AND mode = 'exclusive'"),
    )
    op.create_index(
        "ix_lock_grants_active",
        "lock_grants",
        ["resource_type", "resource_id"],
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "lock_requests",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("items", JSON, nullable=False),
        sa.Column("ttl", sa.Float(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("deadline", TS, nullable=True),
        sa.Column("task_id", sa.String(128), nullable=True),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lock_requests"),
    )


def downgrade() -> None:
    op.drop_table("lock_requests")
    op.drop_table("lock_grants")
    op.drop_table("lock_resources")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("locks")
