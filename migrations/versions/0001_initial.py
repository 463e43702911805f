"""Initial schema: tickets, tasks, task dependencies, task attempts, agents, events, writer commits.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Self-contained on purpose: a migration describes the schema as it was at its revision, so it
uses plain SQLAlchemy types and never imports omoi-ray's current models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("phase", sa.String(128), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("meta", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ticket_id", sa.String(128), nullable=True),
        sa.Column("phase", sa.String(128), nullable=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("requires", JSON, nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("backoff_base", sa.Float(), nullable=False),
        sa.Column("backoff_cap", sa.Float(), nullable=False),
        sa.Column("backoff_jitter", sa.Float(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("not_before", TS, nullable=True),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.Column("agent_incarnation", sa.String(64), nullable=True),
        sa.Column("claim_request_id", sa.String(64), nullable=True),
        sa.Column("deadline", TS, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("upstream", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_tasks_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("idempotency_key", name="uq_tasks_idempotency_key"),
        sa.UniqueConstraint("seq", name="uq_tasks_seq"),
    )
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.create_index("ix_tasks_ticket_id", "tasks", ["ticket_id"])
    op.create_table(
        "task_dependencies",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("depends_on_id", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_dependencies_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["tasks.id"],
            name="fk_task_dependencies_depends_on_id_tasks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "depends_on_id", name="pk_task_dependencies"),
    )
    op.create_index("ix_task_dependencies_depends_on_id", "task_dependencies", ["depends_on_id"])
    op.create_table(
        "task_attempts",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("agent_incarnation", sa.String(64), nullable=False),
        sa.Column("claimed_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("released_at", TS, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_attempts_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name="pk_task_attempts"),
    )
    op.create_index(
        "ix_task_attempts_open",
        "task_attempts",
        ["agent_id"],
        postgresql_where=sa.text("released_at IS NULL"),
        sqlite_where=sa.text("released_at IS NULL"),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("incarnation", sa.String(64), nullable=False),
        sa.Column("capabilities", JSON, nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("info", JSON, nullable=True),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
    )
    op.create_index("ix_agents_status", "agents", ["status"])
    op.create_table(
        "events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=False),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("task_id", sa.String(128), nullable=True),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.Column("ticket_id", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_entity", "events", ["entity_type", "entity_id"])
    op.create_table(
        "writer_commits",
        sa.Column("writer", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.Column("committed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("writer", name="pk_writer_commits"),
    )


def downgrade() -> None:
    op.drop_table("writer_commits")
    op.drop_table("events")
    op.drop_table("agents")
    op.drop_table("task_attempts")
    op.drop_table("task_dependencies")
    op.drop_table("tasks")
    op.drop_table("tickets")
