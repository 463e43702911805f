"""Messaging: collaboration threads, their participants, messages and per-recipient receipts.

Revision ID: 0007
Revises: 0006 (rechained onto 0006 at merge)
Create Date: 2026-11-30

Written by the scheduler alone (see ``omoi_ray/core/threads.py``). Self-contained on purpose
(see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("pos", BIGID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("participants", JSON, nullable=False),
        sa.Column("ticket_id", sa.String(128), nullable=True),
        sa.Column("task_id", sa.String(128), nullable=True),
        sa.Column("meta", JSON, nullable=True),
        sa.Column("outcome", JSON, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("pos", name="pk_threads"),
        sa.UniqueConstraint("id", name="uq_threads_id"),
    )
    op.create_index("ix_threads_status", "threads", ["status"])
    op.create_index("ix_threads_ticket_id", "threads", ["ticket_id"])
    op.create_index("ix_threads_task_id", "threads", ["task_id"])
    op.create_index("ix_threads_closed_at", "threads", ["closed_at"])
    op.create_table(
        "thread_participants",
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", "agent", name="pk_thread_participants"),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name="fk_thread_participants_thread_id_threads", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_thread_participants_agent", "thread_participants", ["agent"])
    op.create_table(
        "messages",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("to_agent", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("body", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_messages"),
        sa.UniqueConstraint("id", name="uq_messages_id"),
        sa.ForeignKeyConstraint(["thread_id"], ["threads.id"], name="fk_messages_thread_id_threads", ondelete="CASCADE"),
    )
    op.create_index("ix_messages_thread_seq", "messages", ["thread_id", "seq"])
    op.create_table(
        "message_receipts",
        sa.Column("message_id", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("read_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("message_id", "recipient", name="pk_message_receipts"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_message_receipts_message_id_messages", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name="fk_message_receipts_thread_id_threads", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_message_receipts_thread_id", "message_receipts", ["thread_id"])
    op.create_index(
        "ix_message_receipts_unread",
        "message_receipts",
        ["recipient", "seq"],
        postgresql_where=sa.text("read_at IS NULL"),
        sqlite_where=sa.text("read_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("message_receipts")
    op.drop_table("messages")
    op.drop_table("thread_participants")
    op.drop_table("threads")
