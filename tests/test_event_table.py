"""The README's event tables and the catalogue in ``omoi_ray/core/events.py`` say the same
thing, and the runtime writes what they say (``task.timed_out`` for every attempt past its
timeout, retried or not)."""

from __future__ import annotations

import re

import pytest

import omoi_ray as omoi
from omoi_ray.core.claims import Report
from omoi_ray.core.events import DECLARED, EMITTED
from omoi_ray.core.model import AttemptOutcome, NewTask, Priority, RetryPolicy
from omoi_ray.core.scheduler import TaskGraph
from tests.conftest import ROOT

_ROW = re.compile(r"\| `([a-z_.]+)` \| ([a-z_]+) \| (.+) \|")


def _readme_tables() -> list[dict[str, tuple[str, str]]]:
    """Each table of the README's Events section whose first column is an event type, as
    {type: (entity, meaning)}, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    tables: list[dict[str, tuple[str, str]]] = []
    current: dict[str, tuple[str, str]] | None = None
    for line in section.splitlines():
        if line.startswith("| type | entity |"):
            current = {}
            tables.append(current)
            continue
        found = _ROW.fullmatch(line.strip())
        if current is not None and found:
            assert found.group(1) not in current, f"{found.group(1)} is listed twice"
            current[found.group(1)] = (found.group(2), found.group(3))
        elif current is not None and not line.startswith("| ---"):
            current = None
    return tables


def _catalogue(types) -> dict[str, tuple[str, str]]:
    return {t.name: (t.entity_type, t.meaning) for t in types.values()}


def test_the_readme_lists_exactly_the_emitted_and_declared_types_with_the_same_meaning():
    tables = _readme_tables()
    # a table of written types, and one of declared types while any type is declared but not written
    assert len(tables) == (2 if DECLARED else 1), "the Events section's tables do not match the catalogue"
    written, declared = tables if DECLARED else (tables[0], {})
    for readme, catalogue, what in ((written, _catalogue(EMITTED), "written"), (declared, _catalogue(DECLARED), "declared")):
        assert sorted(set(catalogue) - set(readme)) == [], f"{what} types missing from the README"
        assert sorted(set(readme) - set(catalogue)) == [], f"{what} types in the README but not in the catalogue"
        for name in catalogue:
            assert readme[name] == catalogue[name], name


def _graph_with_a_running_task(max_retries: int) -> tuple[TaskGraph, object]:
    graph = TaskGraph(lease_ttl=30)
    spec = NewTask(id="t", type="x", payload=None, requires=frozenset(), priority=Priority.MEDIUM,
                   depends_on=(), retry=RetryPolicy(max_retries=max_retries, backoff_base=1, backoff_cap=1),
                   timeout=5.0, fingerprint="f")
    graph.submit([spec], 0.0)
    agent = graph.register_agent("a", "i1", frozenset(), 1, 0.0)
    graph.claim(agent, 1, 1.0)
    graph.apply_report(agent, Report("started", "t", 1), 1.0)
    graph.take_changes()
    return graph, agent


@pytest.mark.parametrize("by", ["deadline", "agent"])
@pytest.mark.parametrize("max_retries,then", [(1, "task.retry_scheduled"), (0, None)])
def test_every_attempt_past_its_timeout_writes_task_timed_out(by, max_retries, then):
    graph, agent = _graph_with_a_running_task(max_retries)
    if by == "deadline":
        graph.advance(7.0)
    else:  # the agent's own timer fired first
        graph.apply_report(agent, Report("finished", "t", 1, AttemptOutcome.TIMED_OUT, None, "timed out"), 6.5)
    types = [e.type for e in graph.take_changes().events if e.entity_type == "task"]
    assert types == ["task.timed_out", then] if then else types == ["task.timed_out"]


@pytest.mark.ray
def test_a_timed_out_retried_attempt_writes_timed_out_then_retry_scheduled(runtime, uid):
    name = f"bs-events-{uid}"
    agent = runtime.spawn_agent(name, capabilities=[name], capacity=1, handler="tests.handlers:behave")
    try:
        t = omoi.TaskSpec(id=f"{uid}-slow", type="behave", requires=[name], payload={"op": "wait_cancel"},
                          timeout=0.5, max_retries=1, backoff_base=0.1, backoff_cap=0.1)
        info = runtime.run([t], timeout=60)[t.id]
        assert (info.status, info.attempt) == ("timed_out", 2)
        types = [e.type for e in runtime.events(t.id)]
        after_start = types[types.index("task.started"):]
        assert after_start == [
            "task.started", "task.timed_out", "task.retry_scheduled", "task.ready", "task.claimed",
            "task.started", "task.timed_out",
        ]
        payloads = [e.payload for e in runtime.events(t.id) if e.type == "task.timed_out"]
        assert [p["attempt"] for p in payloads] == [1, 2]
    finally:
        agent.stop()
