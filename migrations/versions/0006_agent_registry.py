"""The agent registry: type, phase, tags, health, last heartbeat and tasks done on ``agents``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

``health`` (``healthy``, ``stale``, ``lost``, ``dead``, ``stopped``) is the one source of truth
about an agent; ``status`` stays, derived from it, for readers of the first schema. Existing rows
get the health their status implies (alive -> healthy, lost -> lost, stopped -> stopped).
Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("type", sa.String(128), nullable=False, server_default="agent"))
        batch.add_column(sa.Column("phase", sa.String(128), nullable=True))
        batch.add_column(sa.Column("tags", JSON, nullable=True))
        batch.add_column(sa.Column("health", sa.String(16), nullable=False, server_default="healthy"))
        batch.add_column(sa.Column("last_heartbeat_at", TS, nullable=True))
        batch.add_column(sa.Column("tasks_done", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE agents SET health = status WHERE status IN ('lost', 'stopped')")


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for column in ("tasks_done", "last_heartbeat_at", "health", "tags", "phase", "type"):
            batch.drop_column(column)
