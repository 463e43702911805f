"""Coordination nodes (``omoi_ray.core.coordination``): ``tasks.kind``, ``quorum``, ``coordination``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Self-contained on purpose (see 0001). A sync or loop is a row of ``tasks`` that no agent claims:
``kind`` says which ("task" for every row written before), ``quorum`` is a sync's k, and
``coordination`` (JSON) its state (a sync's member results, a loop's definition and round).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="task"))
        batch.add_column(sa.Column("quorum", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("coordination", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("coordination")
        batch.drop_column("quorum")
        batch.drop_column("kind")
