"""Tickets end to end on Ray, SQLite and PostgreSQL: a task held for its phase and released by a
move, auto-advance through a passing gate with the context handed forward, a failing gate
blocking with its reasons, approval, history, bad input, cancelling a ticket, a failed task
blocking its ticket until the move back, a move to BLOCKED recalling a released task, and held
(and recalled) tasks surviving a scheduler restart."""

from __future__ import annotations

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.errors import (
    GateBlockedError,
    IllegalPhaseMoveError,
    InvalidArtifactError,
    InvalidTicketError,
    TicketExistsError,
    TicketNotFoundError,
    WaitTimeoutError,
)
from tests.conftest import until

pytestmark = [pytest.mark.ray]
H = "tests.ticket_handlers:phase_work"
REQ = {"text": "r" * 500, "sections": ["scope", "acceptance_criteria"]}


def task(uid: str, name: str, ticket: str, phase: str | None, result=None, cap: str | None = None,
         fail: str | None = None):
    payload = {"result": result or {}, **({"fail": fail} if fail else {})}
    return omoi.TaskSpec(id=f"{uid}-{name}", type="phase_work", ticket_id=ticket, phase=phase,
                         requires=[cap or f"tk-{uid}"], max_retries=0, payload=payload)


def test_a_held_task_waits_for_its_phase_and_the_ticket_flows_through_gates(runtime, uid):
    rt = runtime
    t = rt.tickets.create("login page", id=f"{uid}-k", description="users log in")
    assert (t.phase, t.status, t.allowed) == ("BACKLOG", "open", ["REQUIREMENTS", "BLOCKED"])
    rt.spawn_agent(f"{uid}-a", capabilities=[f"tk-{uid}"], capacity=2, handler=H)
    req = {"summary": "scope agreed", "decisions": ["email login only"], "risks": ["sso later"],
           "artifacts": [{"type": "requirements_document", "content": REQ, "path": "req.md"}]}
    ids = rt.submit([task(uid, "req", t.id, "REQUIREMENTS", req), task(uid, "design", t.id, "DESIGN",
                                                                        {"summary": "drawn"})])
    held = rt.get(ids[1])
    assert held.status == "pending" and held.reason == f"waiting for ticket '{t.id}' to reach phase DESIGN"
    assert rt.get(ids[0]).status == "pending"
    with pytest.raises(IllegalPhaseMoveError, match="allowed: REQUIREMENTS, BLOCKED"):
        rt.tickets.move(t.id, "DESIGN")
    rt.tickets.move(t.id, "REQUIREMENTS", reason="triaged", by="ann")
    # the requirements task runs; its phase then passes its gate and the ticket advances by itself
    assert rt.wait([ids[0]], timeout=60) == {ids[0]: "completed"}
    assert rt.wait([ids[1]], timeout=60) == {ids[1]: "completed"}
    assert rt.tickets.get(t.id).phase == "IMPLEMENTATION"  # DESIGN has no gate: it advanced too
    seen = rt.result(ids[1])["seen"]
    assert list(seen["phases"]) == ["REQUIREMENTS"] and seen["phases"]["REQUIREMENTS"]["decisions"] == ["email login only"]
    assert "REQUIREMENTS: " in seen["summary"] and "scope agreed" in seen["summary"]
    history = rt.tickets.history(t.id)
    assert [(h.from_phase, h.to_phase, h.by) for h in history] == [
        (None, "BACKLOG", "runtime"), ("BACKLOG", "REQUIREMENTS", "ann"), ("REQUIREMENTS", "DESIGN", "auto-advance"),
        ("DESIGN", "IMPLEMENTATION", "auto-advance")]
    assert history[1].reason == "triaged" and history[2].gate == {"passed": True, "reasons": []}
    # the design phase's context is stored too (every phase, not only the first)
    ctx = rt.tickets.get(t.id).context["phases"]
    assert set(ctx) == {"REQUIREMENTS", "DESIGN"} and ctx["DESIGN"]["summaries"] == [f"{ids[1]}: drawn"]
    arts = rt.tickets.artifacts(t.id)
    assert [(a.type, a.phase, a.task_id, a.path) for a in arts] == [("requirements_document", "REQUIREMENTS", ids[0], "req.md")]
    types = [e.type for e in rt.events(t.id)]
    assert types[0] == "ticket.created" and types.count("ticket.phase.changed") == 3


def test_a_failing_gate_blocks_with_its_reasons_until_artifacts_and_approval(runtime, uid):
    rt = runtime
    gates = {"IMPLEMENTATION": {"artifacts": {"code_changes": {"must_have_tests": True},
                                              "test_coverage": {"min_percentage": 80}}, "approval": True}}
    t = rt.tickets.create("gated", id=f"{uid}-k", gates=gates)
    for phase in ("REQUIREMENTS", "DESIGN", "IMPLEMENTATION"):
        rt.tickets.move(t.id, phase)
    rt.spawn_agent(f"{uid}-a", capabilities=[f"tk-{uid}"], capacity=2, handler=H)
    result = {"artifacts": [{"type": "code_changes", "content": {"files": ["a.py"], "has_tests": False}},
                            {"type": "test_coverage", "content": {"percentage": 60}}]}
    (impl, testing) = rt.submit([task(uid, "impl", t.id, "IMPLEMENTATION", result), task(uid, "qa", t.id, "TESTING")])
    assert rt.wait([impl], timeout=60) == {impl: "completed"}
    gate = rt.tickets.gate(t.id)
    assert not gate.passed and gate.reasons == [
        "code_changes: has no tests", "test_coverage: 60% is below 80%", "waiting for approval of phase IMPLEMENTATION"]
    with pytest.raises(GateBlockedError, match="code_changes: has no tests") as err:
        rt.tickets.move(t.id, "TESTING")
    assert len(err.value.reasons) == 3
    assert rt.tickets.get(t.id).phase == "IMPLEMENTATION" and rt.get(testing).status == "pending"
    rt.tickets.add_artifact(t.id, "code_changes", {"files": ["a.py", "test_a.py"], "has_tests": True})
    rt.tickets.add_artifact(t.id, "test_coverage", {"percentage": 91.5})
    assert rt.tickets.gate(t.id).reasons == ["waiting for approval of phase IMPLEMENTATION"]
    info = rt.tickets.approve(t.id, "IMPLEMENTATION", by="lead", note="ship it")
    assert info.phase == "TESTING"  # the approval let the finished phase advance at once
    assert rt.wait([testing], timeout=60) == {testing: "completed"}
    stored = [(g["passed"], g["phase"]) for g in _gate_rows(rt, t.id)]
    assert stored.index((False, "IMPLEMENTATION")) < stored.index((True, "IMPLEMENTATION"))
    assert rt.tickets.get(t.id).phase == "DEPLOYMENT"  # TESTING (no gate here) advanced once its task completed


def _gate_rows(rt, ticket_id):
    return [e.payload for e in rt.events(ticket_id) if e.type == "ticket.gate.evaluated"]


def test_bad_input_names_the_ticket_phase_or_field_and_changes_nothing(runtime, uid):
    rt = runtime
    t = rt.tickets.create("bad input", id=f"{uid}-k")
    cases = [
        (lambda: rt.tickets.create(""), InvalidTicketError, "title must not be empty"),
        (lambda: rt.tickets.create("x", phases={"name": "p", "sequence": ["A"], "transitions": {}}),
         InvalidTicketError, "2-32 phases"),
        (lambda: rt.tickets.create("x", gates={"QA": {}}), InvalidTicketError, "unknown phase 'QA'"),
        (lambda: rt.tickets.get(f"{uid}-nope"), TicketNotFoundError, f"no ticket with id '{uid}-nope'"),
        (lambda: rt.tickets.move(t.id, "TESTING"), IllegalPhaseMoveError, "may not move from BACKLOG to TESTING"),
        (lambda: rt.tickets.move(t.id, "qa"), InvalidTicketError, "to must be a phase name"),
        (lambda: rt.tickets.add_artifact(t.id, "poem", {"text": "x"}), InvalidArtifactError, "unknown artifact type 'poem'"),
        (lambda: rt.tickets.add_artifact(t.id, "test_results", {"passed": -1, "failed": 0}), InvalidArtifactError,
         "content.passed must be a whole number"),
        (lambda: rt.tickets.add_artifact(t.id, "note", {"text": "x"}, phase="NOPE"), InvalidTicketError, "unknown phase 'NOPE'"),
        (lambda: rt.submit([task(uid, "q", t.id, "QA")]), InvalidTicketError, "phase 'QA' is not a phase of ticket"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    # a repeated create is answered with the ticket; the same id for another ticket, or an id
    # tasks already use as a label, is refused
    assert rt.tickets.create("bad input", id=f"{uid}-k").created_at == t.created_at
    with pytest.raises(TicketExistsError, match="already used by another ticket"):
        rt.tickets.create("other", id=f"{uid}-k")
    rt.submit([task(uid, "labelled", f"{uid}-label", None, cap="nobody")])
    with pytest.raises(TicketExistsError, match="already used as a label by tasks"):
        rt.tickets.create("late", id=f"{uid}-label")
    rt.cancel(f"{uid}-labelled")
    assert rt.tickets.artifacts(t.id) == [] and len(rt.tickets.history(t.id)) == 1
    # a task whose result carries a malformed artifact fails for good, naming it
    rt.spawn_agent(f"{uid}-a", capabilities=[f"tk-{uid}"], capacity=1, handler=H)
    (bad,) = rt.submit([task(uid, "bad", t.id, None, {"artifacts": [{"type": "test_coverage", "content": {"percentage": 101}}]})])
    assert rt.wait([bad], timeout=60) == {bad: "failed"}
    assert "result.artifacts[0]" in rt.get(bad).error and "content.percentage" in rt.get(bad).error


def test_cancelling_a_ticket_cancels_its_unfinished_tasks_at_once(runtime, uid):
    rt = runtime
    t = rt.tickets.create("cancel me", id=f"{uid}-k")
    ids = rt.submit([task(uid, "a", t.id, "DESIGN", cap="nobody"), task(uid, "b", t.id, None, cap="nobody"),
                     task(uid, "free", "label-only", None, cap="nobody")])
    assert rt.tickets.cancel(t.id, reason="scope dropped") == sorted(ids[:2])
    assert [rt.get(i).status for i in ids] == ["cancelled", "cancelled", "ready"]
    assert rt.tickets.get(t.id).status == "cancelled"
    rt.cancel(ids[2])


def test_held_tasks_stay_held_across_a_scheduler_restart(own_runtime, uid):
    rt = own_runtime
    t = rt.tickets.create("restart", id=f"{uid}-k", gates={})
    tid, now = rt.submit([task(uid, "impl", t.id, "DESIGN"), task(uid, "now", t.id, "BACKLOG", cap=f"nobody-{uid}")])
    assert rt.get(now).status == "ready"
    rt.tickets.move(t.id, "BLOCKED")  # recalls "now"
    first = rt.describe()["pid"]
    ray.kill(rt.scheduler, no_restart=False)  # asynchronous: wait for the restarted process
    until(lambda: rt.describe()["pid"] != first, "the scheduler's restart")
    assert rt.tickets.get(t.id).phase == "BLOCKED"
    assert rt.get(tid).status == "pending"
    assert (rt.get(now).status, rt.get(now).reason) == ("pending", f"waiting for ticket '{t.id}' to leave BLOCKED")
    rt.tickets.move(t.id, "BACKLOG")
    assert rt.get(now).status == "ready"
    rt.cancel(now)  # not needed after all: its gate no longer waits for it
    rt.tickets.move(t.id, "REQUIREMENTS")
    rt.tickets.move(t.id, "DESIGN")
    assert rt.get(tid).status == "ready"
    assert [h.to_phase for h in rt.tickets.history(t.id)] == ["BACKLOG", "BLOCKED", "BACKLOG", "REQUIREMENTS", "DESIGN"]


def test_a_failing_task_blocks_its_ticket_and_a_replacement_after_the_move_back_advances_it(runtime, uid):
    rt = runtime
    t = rt.tickets.create("failing", id=f"{uid}-k", gates={})
    rt.tickets.move(t.id, "REQUIREMENTS")
    rt.spawn_agent(f"{uid}-a", capabilities=[f"tk-{uid}"], capacity=2, handler=H)
    bad, design = rt.submit([task(uid, "bad", t.id, "REQUIREMENTS", fail="no scope given"),
                             task(uid, "design", t.id, "DESIGN", {"summary": "drawn"})])
    assert rt.wait([bad], timeout=60) == {bad: "failed"}
    ticket = rt.tickets.get(t.id)  # blocked in the same decision that failed the task
    assert (ticket.phase, ticket.previous_phase) == ("BLOCKED", "REQUIREMENTS")
    last = rt.tickets.history(t.id)[-1]
    assert (last.from_phase, last.to_phase, last.by) == ("REQUIREMENTS", "BLOCKED", "omoi-ray")
    assert last.reason.startswith(f"task '{bad}' failed: ") and "no scope given" in last.reason
    moved = [e.payload for e in rt.events(t.id) if e.type == "ticket.phase.changed"]
    assert moved[-1]["by"] == "omoi-ray" and moved[-1]["to"] == "BLOCKED"
    assert rt.get(design).status == "pending"
    # back to the phase: the failure is acknowledged; a replacement takes the phase through its gate
    rt.tickets.move(t.id, "REQUIREMENTS", reason="bad dropped, retrying", by="ann")
    (again,) = rt.submit([task(uid, "again", t.id, "REQUIREMENTS", {"summary": "scoped"})])
    assert rt.wait([again, design], timeout=60) == {again: "completed", design: "completed"}
    assert rt.tickets.get(t.id).phase == "IMPLEMENTATION"  # DESIGN (no gate) advanced with its task
    assert [(h.from_phase, h.to_phase, h.by) for h in rt.tickets.history(t.id)][-4:] == [
        ("REQUIREMENTS", "BLOCKED", "omoi-ray"), ("BLOCKED", "REQUIREMENTS", "ann"),
        ("REQUIREMENTS", "DESIGN", "auto-advance"), ("DESIGN", "IMPLEMENTATION", "auto-advance")]


def test_moving_to_blocked_recalls_an_unclaimed_ready_task_and_leaving_releases_it(runtime, uid):
    rt = runtime
    t = rt.tickets.create("recall", id=f"{uid}-k", gates={})
    rt.tickets.move(t.id, "REQUIREMENTS")
    nobody = f"nobody-{uid}"  # no agent has it: the task stays ready, unclaimed
    (tid,) = rt.submit([task(uid, "r", t.id, "REQUIREMENTS", cap=nobody)])
    assert rt.get(tid).status == "ready" and ([nobody], 1) in _unclaimable(rt)
    rt.tickets.move(t.id, "BLOCKED", reason="waiting on legal")
    info = rt.get(tid)
    assert (info.status, info.reason) == ("pending", f"waiting for ticket '{t.id}' to leave BLOCKED")
    assert all(caps != [nobody] for caps, _ in _unclaimable(rt))  # out of the ready index too
    assert [e.type for e in rt.events(tid)][-1] == "task.held"
    rt.tickets.move(t.id, "REQUIREMENTS")
    info = rt.get(tid)
    assert (info.status, info.reason) == ("ready", None) and ([nobody], 1) in _unclaimable(rt)
    rt.tickets.cancel(t.id)


def test_a_wait_that_times_out_names_a_held_task_and_why_and_its_bar_counts_it_held(runtime, uid, capsys):
    rt = runtime
    t = rt.tickets.create("held", id=f"{uid}-k", gates={})
    (tid,) = rt.submit([task(uid, "later", t.id, "DESIGN", cap=f"nobody-{uid}")])
    with pytest.raises(WaitTimeoutError) as err:
        rt.wait([tid], timeout=0.2, progress=True)
    why = f"waiting for ticket '{t.id}' to reach phase DESIGN"
    assert str(err.value) == f"1 of 1 tasks were not final after 0.2s: '{tid}' pending ({why})"
    assert err.value.pending == {tid: "pending"} and err.value.reasons == {tid: why}
    assert "pending 1 (1 held by ticket)" in capsys.readouterr().err
    rt.tickets.cancel(t.id)


def _unclaimable(rt):
    return [(list(caps), n) for caps, n in rt.status().unclaimable]
