"""Fencing guards reject stale tokens and change nothing when they do."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from omoi_ray.errors import StaleTokenError
from omoi_ray.handler.fencing import TokenFile, fenced_update


@pytest.fixture
def accounts(db_url):
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    table = sa.Table(
        "fenced_accounts", meta,
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("balance", sa.Integer),
        sa.Column("fence_token", sa.BigInteger, nullable=True),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(id="acct", balance=0, fence_token=None))
    yield engine, table
    meta.drop_all(engine)
    engine.dispose()


def balance(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(table.c.balance, table.c.fence_token)).one()


def test_fenced_updates_accept_equal_and_larger_tokens_and_refuse_stale_ones(accounts):
    engine, table = accounts
    with engine.begin() as conn:
        fenced_update(conn, table, {"id": "acct"}, 5, {"balance": 10})
        fenced_update(conn, table, {"id": "acct"}, 5, {"balance": 11})
    with engine.begin() as conn, pytest.raises(StaleTokenError, match="written with token 5; token 4 is stale"):
        fenced_update(conn, table, {"id": "acct"}, 4, {"balance": 99})
    assert tuple(balance(engine, table)) == (11, 5)
    with engine.begin() as conn, pytest.raises(LookupError):
        fenced_update(conn, table, {"id": "nobody"}, 9, {"balance": 1})


def test_a_token_file_admits_growing_tokens_only(tmp_path):
    fence = TokenFile(tmp_path / "workspace")
    assert fence.current() is None
    fence.admit(3)
    fence.admit(3)
    fence.admit(7)
    with pytest.raises(StaleTokenError, match="admitted token 7; token 6 is stale"):
        fence.admit(6)
    assert fence.current() == 7
