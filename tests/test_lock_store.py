"""Lock state in the database, on SQLite and PostgreSQL: written, rebuilt, and guarded."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from omoi_ray.core.locks import LockMode, LockTable, RequestState
from omoi_ray.store import schema as t
from omoi_ray.store.store import Store
from omoi_ray.store.writes import Mark, is_permanent_error

X, S = LockMode.EXCLUSIVE, LockMode.SHARED
A, B = ("file", "a"), ("file", "b")


def test_lock_state_round_trips_and_tokens_never_go_back(db_url):
    store = Store(db_url)
    table = LockTable()
    now = 100.0
    table.acquire("q1", "h1", [(A, X)], now, ttl=30, wait=None)
    table.acquire("q2", "h2", [(A, S), (B, S)], now, ttl=30, wait=None)  # waits for A
    table.acquire("q3", "h3", [(B, X)], now, ttl=30, wait=5)  # waits behind q2 on B
    store.apply(table.take_changes(), Mark("locks", "e", 1))

    rebuilt = LockTable()
    snap = store.load_locks()
    rebuilt.restore(snap.tokens, snap.grants, snap.requests, "p2-", now + 1)
    assert [g.holder for g in rebuilt.holders_of(A)] == ["h1"]
    assert [r.id for r in rebuilt.waiting_on(B)] == ["q2", "q3"]
    grant = rebuilt.holders_of(A)[0]
    rebuilt.release("h1", [grant.id], now + 2)
    assert rebuilt.requests["q2"].state is RequestState.GRANTED
    assert rebuilt.holders_of(A)[0].token == 2  # continues from the stored counter
    store.apply(rebuilt.take_changes(), Mark("locks", "e2", 1))
    history = store.grant_history(A)
    assert [(h["holder"], h["token"], h["end_reason"]) for h in history] == [("h1", 1, "released"), ("h2", 2, None)]
    assert [r.id for r in store.load_locks().requests] == ["q3"]
    store.dispose()


def test_the_database_refuses_a_second_active_exclusive_grant(db_url):
    store = Store(db_url)
    table = LockTable()
    table.acquire("q1", "h1", [(A, X)], 100.0, ttl=30, wait=None)
    store.apply(table.take_changes())
    other = LockTable()  # a second, mistaken lock manager that does not know about h1
    other.restore([], [], [], "other-", 100.0)
    other.acquire("q9", "h9", [(A, X)], 100.0, ttl=30, wait=None)
    with pytest.raises(Exception) as err:
        store.apply(other.take_changes())
    assert is_permanent_error(err.value)
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        active = conn.execute(sa.select(t.lock_grants.c.holder).where(t.lock_grants.c.ended_at.is_(None))).scalars().all()
    engine.dispose()
    assert active == ["h1"]
    store.dispose()
