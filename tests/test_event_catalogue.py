"""Every event the core emits is in the catalogue (``omoi_ray/core/events.py``) with the entity
type the catalogue declares, and every type the catalogue says is emitted is emitted.

The scenario drives the two event sources, the task graph (threads and tickets included) and the lock table, through every
emitted type, collecting what each ``take_changes()`` hands to the store.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from omoi_ray.core.events import CATALOGUE, EMITTED
from omoi_ray.core.locks import LockMode, LockTable
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.phases import DEFAULT
from omoi_ray.core.tickets import Ticket
from omoi_ray.errors import DeadlockError
from omoi_ray.specs.coordination import SplitSpec, SyncSpec, parse_submission, read_specs
from tests.graph_harness import Harness, spec

X = LockMode.EXCLUSIVE
A, B, C = ("file", "a"), ("file", "b"), ("file", "c")


def _task_graph_events() -> list:
    h = Harness(lease_ttl=30.0)
    worker = h.agent("w1", caps=("x",), capacity=8)
    h.agent("w1", caps=("x", "y"), capacity=8)  # same incarnation, new capabilities
    h.submit(
        spec("ok"),
        spec("after-ok", "ok"),
        spec("flaky", max_retries=1),
        spec("doomed", max_retries=0),
        spec("after-doomed", "doomed"),
        spec("slow", timeout=5.0, max_retries=0),
        spec("lost"),
        spec("never", requires=("z",)),
        dataclasses.replace(spec("join", "ok"), merge={"strategy": "combine"}),  # coordination.join.created
    )
    h.claim(worker)
    h.run(worker, "ok")
    h.claim(worker)
    h.start(worker, "join")
    h.graph.record_merge("join", 1, {"strategy": "combine", "sources": ["ok"], "result_keys": []}, h.now)
    h.finish(worker, "join")
    h.run(worker, "flaky", error="boom", outcome=AttemptOutcome.FAILED)  # retried after its backoff
    h.run(worker, "doomed", error="boom", outcome=AttemptOutcome.FAILED)  # fails for good; its dependant with it
    h.start(worker, "slow")
    h.tick(6.0)  # past "slow"'s timeout
    h.graph.cancel("never", h.now)
    h.start(worker, "lost")
    h.graph.agent_lost("w1", "i1", h.now, "died")  # "lost" is requeued with its agent
    h.agent("w2", inc="i2")
    h.graph.threads.open("t1", "review", ["w1", "w2"], h.now)
    h.graph.threads.post("t1", "w2", {"note": "hi"}, h.now)
    h.graph.threads.close("t1", "resolved", h.now)
    h.graph.agent_stopped("w2", "i2", h.now)
    h.graph.tickets.create(Ticket("k", "t", DEFAULT, DEFAULT.first, h.now, h.now), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)  # through BACKLOG's gate
    h.graph.tickets.change_refused("k", "could not be stored: ...", h.now)  # the storage backstop's record
    h.submit(dataclasses.replace(spec("req"), ticket_id="k", phase="REQUIREMENTS"))
    h.graph.tickets.move("k", "BLOCKED", h.now)  # "req" (ready) is held again
    h.graph.cancel_ticket("k", h.now)
    h.drain()
    return h.events


def _lock_table_events() -> list:
    table, now, events = LockTable(), 100.0, []
    table.acquire("r1", "alice", [(A, X)], now, ttl=10.0, wait=None)
    table.acquire("r2", "bob", [(B, X)], now, ttl=10.0, wait=None)
    table.acquire("r3", "alice", [(B, X)], now, ttl=10.0, wait=None)  # waits behind bob
    with pytest.raises(DeadlockError):
        table.acquire("r4", "bob", [(A, X)], now, ttl=10.0, wait=None)
    table.acquire("r5", "carol", [(A, X)], now, ttl=10.0, wait=1.0)  # gives up after one second
    table.advance(now + 1.0)
    events += table.take_changes().events
    held = [g.id for g in table.holders_of(B)]
    table.release("bob", held, now + 1.0)  # alice's wait on b ends in a grant
    table.acquire("r6", "dave", [(C, X)], now + 1.0, ttl=2.0, wait=None)
    table.advance(now + 5.0)  # dave's lease runs out
    events += table.take_changes().events
    return events


def _handoff_events() -> list:
    h = Harness(lease_ttl=30.0)
    holder = h.agent("a", capacity=4)
    h.agent("b", inc="ib")
    h.agent("c", inc="ic")
    h.submit(spec("h1"), spec("h2"), spec("h3"), spec("h4"))
    h.claim(holder)
    offers = h.graph.handoffs
    offers.offer("o1", "h1", h.now, deadline_s=60, targets=("b", "c"))
    offers.accept("o1", "b", h.now)
    offers.offer("o2", "h2", h.now, deadline_s=60, targets=("b", "c"))
    offers.decline("o2", "b", "busy", h.now)
    offers.decline("o2", "c", "busy", h.now)
    offers.offer("o3", "h3", h.now, deadline_s=1, targets=("c",))
    offers.offer("o4", "h4", h.now, deadline_s=60, targets=("c",))
    h.run(holder, "h4")  # withdrawn: the offering attempt ended first
    h.tick(2.0)  # o3 expires
    h.drain()
    return h.events


def _coordination_events() -> list:
    h = Harness(lease_ttl=30.0)
    h.graph = TaskGraph(lease_ttl=30.0, rng=random.Random(7), read_specs=read_specs(1 << 20))
    worker = h.agent("w", capacity=8)
    h.submit(*parse_submission([
        {"id": "a", "type": "t"}, {"id": "b", "type": "t", "max_retries": 0},
        SyncSpec(id="ok", members=["a"]), SyncSpec(id="doomed", members=["b"]),
        {"id": "c", "type": "t"},
        SplitSpec(parent="c", children=[{"id": "c1", "type": "t"}]),
    ], 1 << 20))
    h.claim(worker)
    h.run(worker, "a")
    h.run(worker, "b", outcome=AttemptOutcome.PERMANENT_FAILURE, error="no")
    h.drain()
    return h.events


@pytest.fixture(scope="module")
def emitted() -> list:
    return _task_graph_events() + _lock_table_events() + _handoff_events() + _coordination_events()


def test_every_emitted_event_is_catalogued_with_its_entity_type(emitted):
    assert emitted
    wrong = sorted(
        {(e.type, e.entity_type) for e in emitted
         if e.type not in EMITTED or EMITTED[e.type].entity_type != e.entity_type}
    )
    assert wrong == [], "emitted (type, entity type) pairs the catalogue does not declare"


def test_every_type_the_catalogue_says_is_emitted_is_emitted(emitted):
    assert sorted(set(EMITTED) - {e.type for e in emitted}) == []


def test_declared_types_are_not_emitted_yet(emitted):
    declared_only = set(CATALOGUE) - set(EMITTED)
    assert {e.type for e in emitted} & declared_only == set()
