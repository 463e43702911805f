"""Scheduler decisions, made without I/O (``omoi_ray.core.scheduler`` and DAG settlement in
``omoi_ray.core.dag``): the behaviour every other layer relies on."""

from __future__ import annotations

from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.tasks import TaskStatus
from tests.graph_harness import Harness, spec

OK = AttemptOutcome.COMPLETED
FAIL = AttemptOutcome.FAILED


def test_completion_readies_dependents_only_when_all_dependencies_completed():
    h = Harness()
    h.submit(spec("a"), spec("b"), spec("c", "a", "b"))
    ag = h.agent()
    assert sorted(h.claim(ag)) == ["a", "b"]
    h.run(ag, "a", result={"x": 1})
    assert h.status("c") == "pending"
    h.run(ag, "b")
    assert h.status("c") == "ready"
    assert "a" not in h.graph.tasks  # terminal tasks leave memory
    changes = h.drain()
    done = {t.id: t for t in changes.created}
    assert done["a"].status is TaskStatus.COMPLETED and done["a"].result == {"x": 1}


def test_failure_at_the_head_of_a_very_long_chain_dooms_all_of_it():
    h = Harness()
    n = 20_000
    h.submit(spec("t0", max_retries=0), *[spec(f"t{i}", f"t{i-1}") for i in range(1, n)])
    ag = h.agent()
    h.claim(ag)
    h.run(ag, "t0", outcome=FAIL)
    assert not h.graph.tasks
    statuses = {t.status for t in h.drain().created}
    assert statuses == {TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED}


def test_cancel_pending_ready_and_running_tasks():
    h = Harness()
    h.submit(spec("run"), spec("ready", requires=("x",)), spec("pend", "run"), spec("child", "ready"))
    ag = h.agent()
    assert h.claim(ag) == ["run"]
    h.start(ag, "run")
    assert h.graph.cancel("ready", h.now) is TaskStatus.CANCELLED
    assert h.graph.cancel("run", h.now) is TaskStatus.CANCELLED
    assert h.graph.cancel("nope", h.now) is None
    changes = h.drain()
    by_id = {t.id: t for t in changes.created + changes.updated}
    assert by_id["pend"].status is TaskStatus.UPSTREAM_FAILED
    assert by_id["pend"].reason == "upstream task 'run' cancelled"
    assert by_id["child"].status is TaskStatus.UPSTREAM_FAILED
    assert [(s.task_id, s.agent_id) for s in changes.signals] == [("run", "a1")]
    assert h.finish(ag, "run", 1, outcome=OK) is not None  # the late result is discarded
    assert h.graph.unclaimable() == {}
