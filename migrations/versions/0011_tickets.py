"""Tickets with phases (``omoi_ray.core.tickets``): the ticket's own columns, and tables
``ticket_phase_history``, ``ticket_artifacts``, ``ticket_gate_results``.

Revision ID: 0011
Revises: 0010 (joins)
Create Date: 2026-11-30

Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("phase_set", JSON, nullable=True))
        batch.add_column(sa.Column("gates", JSON, nullable=True))
        batch.add_column(sa.Column("auto_advance", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("context", JSON, nullable=True))
        batch.add_column(sa.Column("previous_phase", sa.String(64), nullable=True))
    op.create_table(
        "ticket_phase_history",
        sa.Column("ticket_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_phase", sa.String(64), nullable=True),
        sa.Column("to_phase", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("moved_by", sa.String(128), nullable=False),
        sa.Column("gate", JSON, nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_ticket_phase_history_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("ticket_id", "seq", name="pk_ticket_phase_history"),
    )
    op.create_table(
        "ticket_artifacts",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("content", JSON, nullable=False),
        sa.Column("task_id", sa.String(128), nullable=True),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_ticket_artifacts_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_artifacts"),
    )
    op.create_index("ix_ticket_artifacts_ticket_id", "ticket_artifacts", ["ticket_id"])
    op.create_table(
        "ticket_gate_results",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("judged_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_ticket_gate_results_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_gate_results"),
    )
    op.create_index("ix_ticket_gate_results_ticket_id", "ticket_gate_results", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_ticket_gate_results_ticket_id", table_name="ticket_gate_results")
    op.drop_table("ticket_gate_results")
    op.drop_index("ix_ticket_artifacts_ticket_id", table_name="ticket_artifacts")
    op.drop_table("ticket_artifacts")
    op.drop_table("ticket_phase_history")
    with op.batch_alter_table("tickets") as batch:
        for column in ("previous_phase", "context", "auto_advance", "gates", "phase_set", "priority", "description"):
            batch.drop_column(column)
