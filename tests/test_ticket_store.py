"""Tickets in the store, on SQLite and PostgreSQL: a large batch (PostgreSQL's ``COPY`` path)
of a ticket's tasks, artifacts, gate results and history round-trips, and a rebuilt graph holds
the held tasks again."""

from __future__ import annotations

import dataclasses
import random

from omoi_ray.core.phases import DEFAULT
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.tickets import Ticket
from omoi_ray.store import tickets as ticket_rows
from omoi_ray.store.store import Store
from tests.graph_harness import Harness, spec


def test_a_large_ticket_batch_round_trips_and_held_tasks_are_held_again(db_url):
    store = Store(db_url)
    h = Harness()
    h.graph.tickets.create(Ticket("k", "big", DEFAULT, DEFAULT.first, h.now, h.now, gates={}), h.now)
    h.submit(*[dataclasses.replace(spec(f"t{i}"), ticket_id="k", phase="DESIGN") for i in range(450)])
    for i in range(150):  # enough rows of each kind for COPY (a quarter of BULK_ROWS)
        h.graph.tickets.add_artifact("k", "note", {"text": f"n{i}"}, h.now, by="ann")
        h.graph.tickets.gate("k", h.now, by="bob")
    h.graph.tickets.move("k", "BLOCKED", h.now, reason="waiting on legal", by="cy")
    store.apply(h.graph.take_changes())

    snap = store.load()
    rebuilt = TaskGraph(lease_ttl=30.0, rng=random.Random(1))
    rebuilt.restore(snap.tasks, snap.dependencies, snap.agents, snap.open_attempts, snap.next_seq, h.now,
                    tickets=snap.tickets.tickets, artifacts=snap.tickets.artifacts,
                    history_seq=snap.tickets.history_seq)
    ticket = rebuilt.tickets.get("k")
    assert (ticket.phase, ticket.previous_phase, ticket.gates) == ("BLOCKED", "BACKLOG", {})
    assert len(rebuilt.ready) == 0 and all(t.status.value == "pending" for t in rebuilt.tasks.values())
    assert len(rebuilt.tickets.artifacts["k"]) == 150 and snap.tickets.history_seq == {"k": 2}
    for phase in ("BACKLOG", "REQUIREMENTS", "DESIGN"):  # out of BLOCKED only back to where it was
        rebuilt.tickets.move("k", phase, h.now)
    assert len(rebuilt.ready) == 450
    history = ticket_rows.history(store.engine, "k")
    assert [(r["from_phase"], r["to_phase"], r["by"], r["reason"]) for r in history] == [
        (None, "BACKLOG", "runtime", "created"), ("BACKLOG", "BLOCKED", "cy", "waiting on legal")]
    gates = ticket_rows.gate_results(store.engine, "k", limit=1000)
    assert len(gates) == 150 and {g["by"] for g in gates} == {"bob"}
    store.engine.dispose()
