"""Fenced mutual exclusion under faults (the T1 design, scaled for CI).

Clients append to a list kept twice, plain and fenced, under an exclusive lock, while the lock
manager is killed and restarted twice and one client is frozen (SIGSTOP) inside its critical
section past its lease. Afterwards: tokens grew strictly per grant, the grants recorded in the
database never overlapped, the fenced list lost no acknowledged element, and the plain list did
lose one (the frozen client's stale write), which shows the test can tell.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
import ray
import sqlalchemy as sa

import omoi_ray as omoi
from omoi_ray.store.store import Store
from tests.conftest import make_settings
from tests.handlers import gate
from tests.lock_clients import RESOURCE, LedgerClient, ledger_table

pytestmark = [pytest.mark.ray, pytest.mark.faults]
TTL = 2.0


@pytest.fixture
def locked_runtime(request, ray_session, backend, tmp_path):
    name, _ = backend
    url = request.getfixturevalue("pg_schemas").migrated() if name == "postgres" else None
    settings = make_settings(tmp_path, url, f"t1-{uuid.uuid4().hex[:8]}")
    rt = omoi.connect(settings, migrate=True)
    meta, table = ledger_table()
    engine = sa.create_engine(settings.resolved_database_url())
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"which": "plain", "elements": "[]"}, {"which": "fenced", "elements": "[]"}])
    yield rt, engine, table
    engine.dispose()
    rt.shutdown(agents_timeout=2.0)


def until(predicate, timeout=60.0):
    deadline, delay = time.monotonic() + timeout, 0.01
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def test_fenced_writes_lose_nothing_while_the_lock_manager_dies_and_a_client_freezes(locked_runtime, uid):
    rt, engine, table = locked_runtime
    url, ns = rt.settings.resolved_database_url(), rt.settings.namespace
    clients = [LedgerClient.remote(f"client-{i}", url, ns, TTL) for i in range(3)]
    victim = LedgerClient.remote("victim", url, ns, TTL)
    victim_pid = ray.get(victim.pid.remote())

    def fenced_token():
        with engine.connect() as conn:
            return conn.execute(sa.select(table.c.fence_token).where(table.c.which == "fenced")).scalar() or 0

    work = [c.work.remote(12) for c in clients]
    pause = f"{uid}-victim"
    victim_turn = victim.turn.remote("victim-0", pause_gate=pause)
    assert ray.get(gate().wait.remote(f"{pause}:read", 60))  # it holds the lock and has read
    os.kill(victim_pid, signal.SIGSTOP)
    try:
        ray.get(gate().open.remote(f"{pause}:go"))  # it would go on, but it is frozen
        frozen_at = fenced_token()
        ray.kill(rt.lock_manager, no_restart=False)  # the lock manager dies while it is frozen
        until(lambda: fenced_token() > frozen_at)  # its lease ran out and others wrote meanwhile
    finally:
        os.kill(victim_pid, signal.SIGCONT)
    victim_result = ray.get(victim_turn, timeout=120)
    ray.kill(rt.lock_manager, no_restart=False)  # and once more while clients work
    results = [r for batch in ray.get(work, timeout=300) for r in batch] + [victim_result]

    with engine.connect() as conn:
        rows = {r.which: json.loads(r.elements) for r in conn.execute(sa.select(table.c.which, table.c.elements))}
    acknowledged = {r["element"] for r in results if r["acknowledged"]}
    assert not victim_result["acknowledged"]  # its write came with a stale token: refused
    assert acknowledged <= set(rows["fenced"])  # no acknowledged update lost
    assert len(rows["fenced"]) == len(acknowledged)
    assert set(rows["plain"]) < {r["element"] for r in results}  # the unfenced copy lost updates

    store = Store(url)
    grants = store.grant_history(tuple(RESOURCE.split(":", 1)))
    store.dispose()
    tokens = [g["token"] for g in grants]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    answered = {r["token"] for r in results}
    assert len(answered) == len(results) and answered <= set(tokens)
    # A grant whose reply died with the lock manager, and whose lease ran out before the client
    # asked again (same request id), is an orphan: it must have expired, and the retry got a new
    # grant with a larger token.
    orphans = [g for g in grants if g["token"] not in answered]
    for g in orphans:
        assert g["end_reason"] == "expired"
        assert any(h["request_id"] == g["request_id"] and h["token"] > g["token"] for h in grants)
    spans = sorted((g["granted_at"], g["ended_at"]) for g in grants)
    assert all(end is not None for _, end in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert any(g["end_reason"] == "expired" and g["holder"] == "victim" for g in grants)
