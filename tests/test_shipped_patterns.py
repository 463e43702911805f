"""The three shipped patterns end to end on agents (SQLite and PostgreSQL), with the example
handler set (``examples/patterns.py``): the parallel implementation's integration receives every
module; the review loop approving in its second round and running out of rounds; the vote with a
dissenter, with a tie failing the decision, and with a tie decided by ``tie: first``; and
``omoi-ray run <pattern> --demo`` for each of them (exit 0, the outcome printed)."""

from __future__ import annotations

import json
import uuid

import pytest

import omoi_ray as omoi
from omoi_ray.errors import TaskExistsError
from omoi_ray.examples.patterns import HANDLERS
from omoi_ray.cli import main
from tests.conftest import make_settings

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def rt(request, ray_session, backend, tmp_path_factory):
    """A runtime of this module's own with one agent running every task type of the shipped
    patterns (their tasks require no capability: on a shared runtime any agent with a default
    handler could claim them; agents with handlers by type only take their own types)."""
    name, _ = backend
    url = request.getfixturevalue("pg_schemas").new() if name == "postgres" else None
    settings = make_settings(tmp_path_factory.mktemp(f"patterns-{name}"), url, f"patterns-{uuid.uuid4().hex[:8]}",
                             lease_ttl=6.0, long_poll=5.0)
    runtime = omoi.connect(settings, migrate=True)
    runtime.spawn_agent("pattern-worker", capacity=4, handlers={t: f"omoi_ray.examples.patterns:{t}" for t in HANDLERS})
    yield runtime
    runtime.shutdown(agents_timeout=2.0)


def run(rt, name, uid, **params):
    handle = rt.apply_pattern(name, params=params, prefix=uid)
    rt.wait(handle.all_ids, timeout=120)
    return rt.pattern_result(handle)


def test_parallel_implementation_integrates_every_module(rt, uid):
    result = run(rt, "parallel_implementation", uid, feature="search", modules=["index", "query", "rank"])
    assert result.status == "completed", [(i.id, i.status, i.error, i.reason) for infos in result.steps.values() for i in infos]
    assert result.outcome == {"feature": "search", "modules": ["index", "query", "rank"], "build": "passed"}


def test_the_review_loop_approves_in_its_second_round(rt, uid):
    result = run(rt, "review_feedback_loop", uid, change="retry budget")
    assert result.status == "completed"
    assert result.outcome["outcome"] == "approved"
    assert result.outcome["rounds"] == 2
    assert result.outcome["last"]["verdict"] == "approved"
    assert rt.get(f"{uid}.rounds.r2.revise").status == "completed"  # the round really ran
    # the result lists the round the loop created, after the handle's steps
    assert list(result.steps) == ["implement", "review", "rounds", "rounds.r2.review", "rounds.r2.revise"]
    assert [i.id for i in result.steps["rounds.r2.revise"]] == [f"{uid}.rounds.r2.revise"]
    assert result.steps["rounds.r2.review"][0].result["verdict"] == "approved"


def test_the_review_loop_ends_when_its_rounds_are_exhausted(rt, uid):
    result = run(rt, "review_feedback_loop", uid, max_rounds=1)
    assert result.status == "completed"
    assert result.outcome["outcome"] == "rounds_exhausted"
    assert result.outcome["rounds"] == 1
    assert result.outcome["last"]["verdict"] == "changes_requested"


def test_the_vote_with_a_dissenter_takes_the_majority(rt, uid):
    result = run(rt, "majority_vote", uid, question="Merge #12?")
    assert result.status == "completed"
    assert result.outcome == {"question": "Merge #12?", "decision": "yes",
                              "counts": [{"value": "yes", "votes": 2}, {"value": "no", "votes": 1}]}


def test_a_tied_vote_fails_the_decision_unless_the_tie_policy_decides(rt, uid):
    tied = run(rt, "majority_vote", f"{uid}-fail", evaluators=2, wait_for=2, quorum=1)
    assert tied.status == "failed"
    assert "tie" in rt.get(f"{uid}-fail.decide").error
    first = run(rt, "majority_vote", f"{uid}-first", evaluators=2, wait_for=2, quorum=1, tie="first")
    assert first.status == "completed"
    assert first.outcome["decision"] == "yes"  # evaluator 0's answer: the tied value voted first


@pytest.mark.parametrize("name", ["parallel_implementation", "review_feedback_loop", "majority_vote"])
def test_each_shipped_pattern_runs_with_demo(ray_session, name, tmp_path, capsys):
    code = main(["run", name, "--demo", "--home", str(tmp_path), "--namespace", f"demo-{tmp_path.name[-8:]}"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    assert f"{name}: completed" in out
    assert json.loads(out[out.index("{"):])  # the outcome, printed as JSON
    if name == "review_feedback_loop":  # the bar counts the round the loop created (approved in round 2)
        assert "5/5" in captured.err, captured.err


STUCK = """
name: stuck
steps:
  work:
    split: {count: 3, task: {type: implement, requires: [nobody]}}
  done:
    sync: {members: [work]}
  review:
    task: {type: review, requires: [nobody]}
  rounds:
    loop:
      check: review
      until: {key: verdict, equals: approved}
      max_rounds: 3
      body:
        revise: {type: revise}
        review: {type: review, after: [revise]}
"""


def test_cancelling_an_applied_pattern_cancels_all_of_it_and_nothing_else(rt, uid, tmp_path):
    path = tmp_path / "stuck.yaml"
    path.write_text(STUCK)
    handle = rt.apply_pattern(str(path), prefix=uid)
    other = rt.apply_pattern(str(path), prefix=f"{uid}-other")
    cancelled = rt.patterns.cancel(handle, reason="not needed")
    assert sorted(cancelled) == sorted(handle.all_ids)
    assert {rt.get(i).status for i in handle.all_ids} == {"cancelled"}
    assert rt.get(f"{uid}.work.0").reason == "not needed"
    assert rt.pattern_result(handle).status == "failed"
    assert {rt.get(i).status for i in other.all_ids} <= {"pending", "ready"}  # a look-alike prefix is untouched
    assert rt.patterns.cancel(handle) == {}  # nothing left: a second cancel is a no-op
    assert rt.apply_pattern(str(path), prefix=f"{uid}-other").all_ids == other.all_ids  # the same again: a no-op
    changed = tmp_path / "stuck2.yaml"
    changed.write_text(STUCK.replace("task: {type: review, requires: [nobody]}", "task: {type: review, requires: [none]}"))
    with pytest.raises(TaskExistsError, match=f"prefix '{uid}-other' was applied before with other parameters"):
        rt.apply_pattern(str(changed), prefix=f"{uid}-other")
    rt.patterns.cancel(other)


LOOP = """
name: stuck_loop
steps:
  review:
    task: {type: review}
  rounds:
    loop:
      check: review
      until: {key: verdict, equals: approved}
      max_rounds: 3
      body:
        revise: {type: revise, requires: [nobody]}
        review: {type: review, after: [revise]}
"""


def test_a_loop_round_created_at_run_time_is_cancelled_with_its_pattern(rt, uid, tmp_path):
    path = tmp_path / "stuck_loop.yaml"
    path.write_text(LOOP)
    handle = rt.apply_pattern(str(path), prefix=uid)
    rt.wait([f"{uid}.review"], timeout=60)  # round 1 asked for changes: round 2 exists, and cannot run
    assert f"{uid}.rounds.r2.review" in rt.get(f"{uid}.rounds").depends_on
    cancelled = rt.patterns.cancel(handle)
    assert sorted(cancelled) == sorted([f"{uid}.rounds", f"{uid}.rounds.r2.revise", f"{uid}.rounds.r2.review"])
    assert {rt.get(i).status for i in cancelled} == {"cancelled"}
    progress = rt.patterns.progress(handle)  # every task under the prefix, rounds included
    assert progress.statuses == {f"{uid}.review": "completed", **dict.fromkeys(cancelled, "cancelled")}
    assert progress.finished
    assert set(rt.pattern_result(handle).steps) == {"review", "rounds", "rounds.r2.review", "rounds.r2.revise"}
