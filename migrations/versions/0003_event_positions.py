"""Event positions for the relay: the writing transaction's id on each event, relay cursors;
``events.request_id`` widened to 128 characters like the lock request ids it records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

On PostgreSQL ``events.txid`` defaults to ``pg_current_xact_id()`` (the writing transaction),
so readers can publish only what no running transaction can still add to (see
``omoi_ray/store/events.py``). SQLite serialises writers; its ``txid`` stays 0.
Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    default = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else sa.text("0")
    with op.batch_alter_table("events") as batch:
        # existing rows keep 0: they were all committed before this migration, so they sort first
        batch.add_column(sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
        batch.alter_column("request_id", type_=sa.String(128), existing_type=sa.String(64), existing_nullable=True)
    if postgres:
        op.alter_column("events", "txid", server_default=default)
    op.create_index("ix_events_position", "events", ["txid", "id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table(
        "relay_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("event_pk", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.String(32), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_relay_cursors"),
    )


def downgrade() -> None:
    op.drop_table("relay_cursors")
    op.drop_index("ix_events_created_at", "events")
    op.drop_index("ix_events_position", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("txid")
        batch.alter_column("request_id", type_=sa.String(64), existing_type=sa.String(128), existing_nullable=True)
