"""One database, one runtime: the owning runtime and each writer's owner epoch.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

``db_owner`` holds one row: the namespace and Ray cluster id of the runtime that owns the
database, since when, and its lease (renewed by its scheduler). ``db_owner_epochs`` holds each
writer's owner epoch, checked in every commit of that writer (see ``omoi_ray/core/ownership.py``).
A database without these tables (or with no row) is unowned. Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "db_owner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("cluster_id", sa.String(64), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("lease_expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_db_owner"),
    )
    op.create_table(
        "db_owner_epochs",
        sa.Column("writer", sa.String(64), nullable=False),
        sa.Column("owner_epoch", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("writer", name="pk_db_owner_epochs"),
    )


def downgrade() -> None:
    op.drop_table("db_owner_epochs")
    op.drop_table("db_owner")
