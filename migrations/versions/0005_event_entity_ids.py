"""``events.entity_id`` widened to 1024 characters: a lock event names its resource ``type:id``,
up to 64 + 1 + 512 characters (see ``omoi_ray/specs/locks.py``), which did not fit 128.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

PostgreSQL widens a ``varchar`` in its catalogue only (no rewrite, the index stays valid).
SQLite does not enforce lengths; its declared type is changed too (a batch copy of ``events``)
so that the schema it reports is the models' exactly. Self-contained on purpose (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.alter_column("entity_id", type_=sa.String(1024), existing_type=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    # refuses (PostgreSQL) while a row holds an id over 128 characters: such rows must go first
    with op.batch_alter_table("events") as batch:
        batch.alter_column("entity_id", type_=sa.String(128), existing_type=sa.String(1024), existing_nullable=False)
