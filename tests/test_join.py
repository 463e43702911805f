"""Joins end to end on Ray, SQLite and PostgreSQL: a task with ``merge`` reads its sources'
merged results with ``ctx.merged()`` (sync and async handlers); built-in and custom strategies;
a majority tie failing the join for good; the join and merge events; bad merge specs refused at
submission; a pattern applied as one atomic submission, and its outcome."""

from __future__ import annotations

import pytest

import omoi_ray as omoi
from omoi_ray.errors import InvalidMergeError, InvalidSubmissionError, PatternError, TaskNotFoundError

pytestmark = [pytest.mark.ray]
HANDLERS = {"source": "tests.join_handlers:source", "join": "tests.join_handlers:join",
            "join_async": "tests.join_handlers:join_async"}


@pytest.fixture(scope="module")
def agents(runtime):
    """One agent running sources and joins (module-wide: the runtime is shared per backend)."""
    tag = f"join-{runtime.settings.namespace}"
    runtime.spawn_agent(f"{tag}-a", capabilities=["join"], capacity=4, handlers=HANDLERS)
    return runtime


def sources(uid: str, results: list, **extra) -> list[omoi.TaskSpec]:
    return [omoi.TaskSpec(id=f"{uid}-s{i}", type="source", requires=["join"], payload={"result": r}, **extra)
            for i, r in enumerate(results)]


@pytest.mark.parametrize("handler", ["join", "join_async"])
def test_a_join_receives_its_sources_merged_in_depends_on_order(agents, uid, handler):
    rt = agents
    srcs = sources(uid, [{"x": 1, "files": ["a"]}, {"x": 2, "files": ["b", "a"]}, None])
    deps = [s.id for s in reversed(srcs)]  # declared order: s2, s1, s0
    joins = [
        omoi.TaskSpec(id=f"{uid}-{name}", type=handler, requires=["join"], depends_on=deps, merge=name)
        for name in ("combine", "union", "intersection")
    ]
    ids = rt.submit([*srcs, *joins])
    assert set(rt.wait(ids, timeout=60).values()) == {"completed"}
    assert rt.result(f"{uid}-combine") == {"merged": {"x": 1, "files": ["a"]}}  # s0 declared last: it wins
    assert rt.result(f"{uid}-union") == {"merged": {"files": ["a", "b"], "x": [1, 2]}}
    assert rt.result(f"{uid}-intersection") == {"merged": {}}
    events = rt.events(f"{uid}-union")
    created = [e for e in events if e.type == "coordination.join.created"]
    merged = [e for e in events if e.type == "coordination.merge.completed"]
    assert [e.payload for e in created] == [{"strategy": "union", "sources": deps}]
    assert [(e.entity_type, e.payload) for e in merged] == [
        ("coordination", {"strategy": "union", "sources": deps, "result_keys": ["files", "x"], "attempt": 1}),
    ]
    types = [e.type for e in events]
    assert types.index("coordination.join.created") < types.index("coordination.merge.completed") < types.index(
        "task.completed")


def test_majority_with_a_dissenter_and_with_a_tie(agents, uid):
    rt = agents
    votes = sources(uid, [{"answer": "yes"}, {"answer": "no"}, {"answer": "yes"}])
    tie = [omoi.TaskSpec(id=f"{uid}-t{i}", type="source", requires=["join"], payload={"result": {"answer": a}})
           for i, a in enumerate(["yes", "no"])]
    majority = {"strategy": "majority", "key": "answer", "quorum": 2}
    ids = rt.submit([
        *votes, *tie,
        omoi.TaskSpec(id=f"{uid}-decide", type="join", requires=["join"], depends_on=[v.id for v in votes],
                      merge=majority),
        omoi.TaskSpec(id=f"{uid}-tied", type="join", requires=["join"], depends_on=[t.id for t in tie],
                      merge={"strategy": "majority", "key": "answer", "quorum": 1}, max_retries=3),
    ])
    statuses = rt.wait(ids, timeout=60)
    assert rt.result(f"{uid}-decide") == {"merged": {
        "winner": "yes", "votes": 2, "counts": [{"value": "yes", "votes": 2}, {"value": "no", "votes": 1}],
        "quorum": 2, "tie": False, "abstained": [],
    }}
    assert statuses[f"{uid}-tied"] == "failed"
    tied = rt.get(f"{uid}-tied")
    assert "a tie at 1 vote(s) between \"yes\", \"no\" (tie: fail)" in tied.error
    assert len(rt.attempts(f"{uid}-tied")) == 1  # a MergeError is permanent: not retried


def test_a_custom_merge_runs_in_the_agent(agents, uid):
    rt = agents
    srcs = sources(uid, [1, 2])
    custom = {"strategy": "custom", "function": "tests.join_handlers:count_sources"}
    ids = rt.submit([*srcs, omoi.TaskSpec(id=f"{uid}-j", type="join", requires=["join"],
                                          depends_on=[s.id for s in srcs], merge=custom)])
    rt.wait(ids, timeout=60)
    assert rt.result(f"{uid}-j") == {"merged": {"ids": [f"{uid}-s0", f"{uid}-s1"], "n": 2}}
    assert rt.get(f"{uid}-j").merge == custom


def test_bad_merge_specs_are_refused_at_submission(agents, uid):
    rt = agents
    with pytest.raises(InvalidMergeError, match=f"task '{uid}-j': merge: merge.strategy must be one of"):
        rt.submit([omoi.TaskSpec.model_construct(id=f"{uid}-j", type="join", merge="avg")])
    with pytest.raises(InvalidMergeError, match="merge.key is required by strategy 'majority'"):
        rt.submit([{"id": f"{uid}-j", "type": "join", "merge": {"strategy": "majority"}}])
    with pytest.raises(TaskNotFoundError):
        rt.get(f"{uid}-j")


PATTERN = """
name: fan_in
parameters:
  parts: {type: list, default: [{x: 1}, {y: 2}]}
  bad_cap: {type: string, default: join}
steps:
  work:
    split: {over: "${parts}", task: {type: source, requires: [join], payload: {result: "${item}"}}}
  last:
    after: [work]
    task: {type: source, requires: ["${bad_cap}"], payload: {result: {z: 3}}}
  gather:
    after: [work, last]
    join: {merge: combine, task: {type: join, requires: [join]}}
"""


def test_a_pattern_is_applied_atomically_and_its_outcome_read(agents, uid, tmp_path):
    rt = agents
    path = tmp_path / "fan_in.yaml"
    path.write_text(PATTERN)
    with pytest.raises(InvalidSubmissionError, match=f"task '{uid}.last': requires"):
        rt.apply_pattern(str(path), params={"bad_cap": "NOT A CAP"}, prefix=uid)
    with pytest.raises(TaskNotFoundError):  # nothing of it was stored, not even the valid tasks
        rt.get(f"{uid}.work.0")
    with pytest.raises(PatternError, match="parameter 'parts' must be a list"):
        rt.apply_pattern(str(path), params={"parts": "x"}, prefix=uid)

    handle = rt.apply_pattern(str(path), ticket="T-1", prefix=uid)
    assert handle.ids == {"work": [f"{uid}.work.0", f"{uid}.work.1"], "last": [f"{uid}.last"],
                          "gather": [f"{uid}.gather"]}
    assert handle.finals == ("gather",)
    rt.wait(handle.all_ids, timeout=60)
    outcome = rt.pattern_result(handle)
    assert (outcome.status, outcome.outcome) == ("completed", {"merged": {"x": 1, "y": 2, "z": 3}})
    assert {info.ticket_id for infos in outcome.steps.values() for info in infos} == {"T-1"}
