"""Faults are tests: kill agents and the scheduler mid-run; nothing is lost, nothing done twice.

Each test gets its own runtime (namespace and database) so its kills disturb nobody else.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.core.claims import Report
from omoi_ray.core.model import AttemptOutcome
from tests.conftest import until
from tests.handlers import gate

pytestmark = [pytest.mark.ray, pytest.mark.faults]
H = "tests.handlers:behave"


def completed_events(rt, task_ids):
    counts = Counter()
    for tid in task_ids:
        counts[tid] = sum(1 for e in rt.events(tid) if e.type == "task.completed")
    return counts


def test_killing_an_agent_mid_task_moves_the_task_to_another_agent(own_runtime, uid):
    rt = own_runtime
    cap = f"f-{uid}"
    victim = rt.spawn_agent("victim", capabilities=[cap], capacity=1, handler=H, max_restarts=0)
    t = omoi.TaskSpec(
        id=f"{uid}-t", type="behave", requires=[cap],
        payload={"op": "die_on_agent", "agent": "victim", "gate": f"{uid}-never", "started_gate": f"{uid}-t"},
    )
    rt.submit([t])
    assert ray.get(gate().wait.remote(f"{uid}-t:1", 30))  # attempt 1 is running on the victim
    old_incarnation = victim.info()["incarnation"]
    victim.kill()
    # Dead at once (Ray reports the death), never stale first (no lease had to run out).
    until(lambda: rt.agents.get("victim").health == "dead", "'victim' marked dead")
    moves = [(e.payload["from"], e.payload["to"]) for e in rt.events("victim") if e.type == "agent.health.changed"]
    assert moves == [("healthy", "dead")]
    rt.spawn_agent("survivor", capabilities=[cap], capacity=1, handler=H)
    assert rt.wait([t.id], timeout=60) == {t.id: "completed"}
    info = rt.get(t.id)
    assert (info.agent_id, info.attempt, info.result) == ("survivor", 2, {"agent": "survivor"})
    attempts = rt.attempts(t.id)
    assert [(a.agent_id, a.outcome) for a in attempts] == [("victim", "lost"), ("survivor", "completed")]
    assert completed_events(rt, [t.id]) == {t.id: 1}

    # A late result from the dead attempt (as a zombie would send it) changes nothing.
    late = Report("finished", t.id, 1, AttemptOutcome.COMPLETED, {"agent": "victim"}, None)
    reply = ray.get(rt.scheduler.exchange.remote("victim", old_incarnation, "r-late", [late], [], None))
    assert reply.reregister and not reply.tasks
    assert rt.get(t.id).result == {"agent": "survivor"}
    assert [e.type for e in rt.events("victim")] == ["agent.registered", "agent.health.changed", "agent.lost"]


def test_an_agent_restarted_by_ray_registers_again_and_its_task_is_redone(own_runtime, uid):
    rt = own_runtime
    cap = f"r-{uid}"
    agent = rt.spawn_agent("phoenix", capabilities=[cap], capacity=1, handler=H)
    t = omoi.TaskSpec(
        id=f"{uid}-t", type="behave", requires=[cap],
        payload={"op": "wait_gate", "gate": f"{uid}-go", "started_gate": f"{uid}-t"},
    )
    rt.submit([t])
    assert ray.get(gate().wait.remote(f"{uid}-t:1", 30))
    agent.kill(restart=True)
    assert ray.get(gate().wait.remote(f"{uid}-t:2", 60))  # the restarted agent took attempt 2
    ray.get(gate().open.remote(f"{uid}-go"))
    assert rt.wait([t.id], timeout=60) == {t.id: "completed"}
    assert [a.outcome for a in rt.attempts(t.id)] == ["lost", "completed"]
    assert completed_events(rt, [t.id]) == {t.id: 1}


def test_killing_the_scheduler_twice_loses_nothing_and_completes_nothing_twice(own_runtime, uid, tmp_path):
    rt = own_runtime
    log = tmp_path / "runs.jsonl"
    for i in range(2):
        rt.spawn_agent(f"worker-{i}", capabilities=["w"], capacity=4, handler=H)
    n = 300
    tasks = []
    for i in range(n):
        deps = [f"{uid}-{i - 50}"] if i >= 50 and i % 3 == 0 else []
        tasks.append(
            omoi.TaskSpec(id=f"{uid}-{i}", type="behave", requires=["w"], depends_on=deps,
                          payload={"op": "work", "seconds": 0.01, "log": str(log)})
        )
    ids = rt.submit(tasks)
    pids = []
    for upto in (n // 3, 2 * n // 3):
        rt.wait(ids[:upto], timeout=120)
        pids.append(rt.describe()["pid"])
        ray.kill(rt.scheduler, no_restart=False)
    statuses = rt.wait(ids, timeout=180)
    described = rt.describe()
    assert described["restarted"] and described["pid"] not in pids
    assert Counter(statuses.values()) == {"completed": n}
    assert all(count == 1 for count in completed_events(rt, ids).values())
    for tid in ids:
        outcomes = [a.outcome for a in rt.attempts(tid)]
        assert outcomes.count("completed") == 1 and outcomes[-1] == "completed"
    # Handlers may have run more than once (at-least-once), but every task ran at least once.
    ran = Counter(json.loads(line)["task"] for line in log.read_text().splitlines() if '"end"' in line)
    assert set(ran) == set(ids)
