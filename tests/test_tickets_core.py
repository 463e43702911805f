"""The phase table, gates, held tasks, auto-advance and context aggregation, in the pure core
(``core.phases``, ``core.gates``, ``core.tickets``), with the graph harness's fake clock."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omoi_ray.core.claims import Report
from omoi_ray.core.gates import DEFAULT_GATES, check_artifact, check_gates, evaluate
from omoi_ray.core.model import AttemptOutcome
from omoi_ray.core.phases import DEFAULT, PhaseSet
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.submission import StoredTask
from omoi_ray.core.tasks import FAILED_FOR_GOOD, TaskStatus
from omoi_ray.core.tickets import (
    FAILS_PHASE,
    MAX_CONTEXT_ITEMS,
    MAX_SUMMARY_CHARS,
    Ticket,
    aggregate,
    context_for,
    summarize,
)
from omoi_ray.errors import (
    GateBlockedError,
    IllegalPhaseMoveError,
    InvalidArtifactError,
    InvalidTicketError,
    TicketClosedError,
)
from omoi_ray.specs.coordination import LoopSpec, read_specs
from omoi_ray.specs.tasks import parse_new_tasks
from tests.graph_harness import Harness, spec

ORIGINAL = {  # the original's PHASE_TRANSITIONS, written out independently of the module
    "BACKLOG": {"REQUIREMENTS", "BLOCKED"},
    "REQUIREMENTS": {"DESIGN", "BLOCKED"},
    "DESIGN": {"IMPLEMENTATION", "BLOCKED"},
    "IMPLEMENTATION": {"TESTING", "BLOCKED"},
    "TESTING": {"DEPLOYMENT", "IMPLEMENTATION", "BLOCKED"},
    "DEPLOYMENT": {"DONE", "BLOCKED"},
    "DONE": set(),
    "BLOCKED": {"BACKLOG", "REQUIREMENTS", "DESIGN", "IMPLEMENTATION", "TESTING"},
}


# ------------------------------------------------------------------ the phase table


@pytest.mark.parametrize("src", sorted(ORIGINAL))
@pytest.mark.parametrize("dst", sorted(ORIGINAL))
def test_the_default_table_is_the_originals_and_is_enforced(src, dst):
    if dst in ORIGINAL[src]:
        DEFAULT.check_move("t1", src, dst)
    else:
        with pytest.raises(IllegalPhaseMoveError) as err:
            DEFAULT.check_move("t1", src, dst)
        assert "ticket 't1'" in str(err.value) and sorted(err.value.allowed) == sorted(ORIGINAL[src])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(ORIGINAL)), max_size=30))
def test_a_ticket_follows_the_table_model(path):
    """Random move requests against a model of the table: legal moves happen, illegal ones
    raise and change nothing; forward moves need no gate beyond the defaults' (none set here).
    One unclaimable task per working phase: it is ready (in the ready index) exactly while the
    ticket has reached its phase, held (pending, out of the index, the reason saying why)
    otherwise, whatever moves released and recalled it before."""
    h = Harness()
    t = h.graph.tickets.create(_ticket("t1", gates={}), h.now)
    model, before = "BACKLOG", None
    order = DEFAULT.sequence
    work, live, n = order[:-1], {}, 0
    for to in path:
        for p in work:  # a live task in every working phase (new ones after a cancel)
            if model != "DONE" and p not in live:
                n += 1
                live[p] = f"w{n}-{p}"
                h.submit(dataclasses.replace(_task(live[p], "t1", p), requires=frozenset({"nobody"})))
        if model == "DONE":
            with pytest.raises(TicketClosedError):
                h.graph.tickets.move("t1", to, h.now)
        elif to == model:
            h.graph.tickets.move("t1", to, h.now)  # a repeat: nothing happens
        elif to in ORIGINAL[model] and (model != "BLOCKED" or order.index(to) <= order.index(before)):
            if DEFAULT.needs_gate(model, to):  # its unfinished task would hold the gate: cancel it
                h.graph.cancel(live.pop(model), h.now)
                assert t.context["unacknowledged"]["count"] == 1
            h.graph.tickets.move("t1", to, h.now)
            assert "unacknowledged" not in t.context  # the move acknowledged the cancel
            model, before = to, model
        else:
            with pytest.raises(IllegalPhaseMoveError):
                h.graph.tickets.move("t1", to, h.now)
        assert t.phase == model
        if model == "DONE":
            continue
        for p, tid in live.items():
            task, reached = h.graph.tasks[tid], model != "BLOCKED" and order.index(p) <= order.index(model)
            assert (task.status.value, task.id in h.graph.ready) == (("ready", True) if reached else ("pending", False))
            why = "leave BLOCKED" if model == "BLOCKED" else f"reach phase {p}"
            assert (task.reason is None) if reached else why in task.reason


def test_custom_phase_sets_are_validated():
    ps = PhaseSet.parse({"name": "review", "sequence": ["DRAFT", "REVIEW", "PUBLISHED"],
                         "transitions": {"DRAFT": ["REVIEW"], "REVIEW": ["PUBLISHED", "DRAFT"]}})
    assert ps.next_phase("DRAFT") == "REVIEW" and ps.needs_gate("DRAFT", "REVIEW") and not ps.needs_gate("REVIEW", "DRAFT")
    bad = [
        ({"name": "x", "sequence": ["A"], "transitions": {}}, "2-32 phases"),
        ({"name": "x", "sequence": ["A", "a"], "transitions": {}}, "upper case"),
        ({"name": "x", "sequence": ["A", "B"], "transitions": {"A": ["C"]}}, "unknown phase 'C'"),
        ({"name": "x", "sequence": ["A", "B"], "transitions": {"A": ["B"], "B": ["A"]}}, "final phase"),
        ({"name": "x", "sequence": ["A", "B", "C"], "transitions": {"A": ["C"]}}, "B cannot be reached"),
        ({"name": "x", "sequence": "AB", "transitions": {}}, "must be a list"),
        ({"name": "x", "sequence": ["A", "A"], "transitions": {}}, "appears twice"),
        ({"name": "x", "sequence": ["A", "B", "C"], "transitions": {"A": ["B", "C"]}}, r"transitions\.B: only the final"),
        ({"name": "x", "sequence": ["A", "B"], "transitions": {"A": ["B", "X"]}, "blocked": "X"},
         r"transitions\.X: only the final"),
        ({"name": "x", "sequence": ["A", "B"], "transitions": {"A": [["B"]]}}, r"transitions\.A names unknown phase \['B'\]"),
        ({"name": "x", "sequence": ["A", "B"], "transitions": {"A": [3]}}, r"transitions\.A names unknown phase 3"),
    ]
    for data, match in bad:
        with pytest.raises(InvalidTicketError, match=match):
            PhaseSet.parse(data)


# ------------------------------------------------------------------ gates


REQ = {"text": "x" * 500, "sections": ["Scope", "acceptance_criteria"]}


def test_default_gates_pass_and_fail_with_every_reason():
    gate = DEFAULT_GATES["REQUIREMENTS"]
    assert evaluate("REQUIREMENTS", gate, [("requirements_document", REQ)]).passed
    out = evaluate("REQUIREMENTS", gate, [("requirements_document", {"text": "short", "sections": ["scope"]})], 2)
    assert not out.passed and out.reasons == (
        "2 task(s) of phase REQUIREMENTS not finished",
        "requirements_document: text is 5 characters, at least 500 required",
        "requirements_document: missing section(s) acceptance_criteria",
    )
    impl = DEFAULT_GATES["IMPLEMENTATION"]
    out = evaluate("IMPLEMENTATION", impl, [("code_changes", {"files": ["a.py"], "has_tests": False}),
                                            ("test_coverage", {"percentage": 65})])
    assert out.reasons == ("code_changes: has no tests", "test_coverage: 65% is below 80%")
    # the latest artifact of a type counts
    out = evaluate("TESTING", DEFAULT_GATES["TESTING"], [("test_results", {"passed": 3, "failed": 1}),
                                                         ("test_results", {"passed": 4, "failed": 0})])
    assert out.reasons == ("missing artifact test_evidence",)
    assert evaluate("DESIGN", None, []).passed
    assert evaluate("DESIGN", {"artifacts": {}, "approval": True}, []).reasons == ("waiting for approval of phase DESIGN",)


def test_artifacts_and_gate_declarations_are_checked():
    check_artifact("t1", "test_coverage", {"percentage": 80.5})
    cases = [
        ("nope", {}, "unknown artifact type 'nope'"),
        ("approval", {"by": "me"}, "unknown artifact type 'approval'"),
        ("test_coverage", {"percentage": float("nan")}, "content.percentage must be a number"),
        ("test_coverage", {"percentage": True}, "content.percentage"),
        ("test_results", {"passed": 1}, "content.failed is required"),
        ("code_changes", {"files": "a.py", "has_tests": True}, "content.files must be a list"),
        ("note", {"text": "a", "extra": 1}, "unknown field"),
        ("note", ["text"], "content must be a mapping"),
    ]
    for kind, content, match in cases:
        with pytest.raises(InvalidArtifactError, match=match) as err:
            check_artifact("t1", kind, content)
        assert "ticket 't1'" in str(err.value)
    with pytest.raises(InvalidTicketError, match="unknown criterion 'max_len'"):
        check_gates({"DESIGN": {"artifacts": {"design_document": {"max_len": 3}}}}, DEFAULT.phases)
    with pytest.raises(InvalidTicketError, match="unknown phase 'QA'"):
        check_gates({"QA": {}}, DEFAULT.phases)


@pytest.mark.parametrize(("kind", "criterion", "value", "fits"), [
    ("note", "min_percentage", 50, "test_coverage"),
    ("test_coverage", "min_length", 5, "note"),
    ("note", "all_passed", True, "test_results"),
    ("code_changes", "required_sections", ["x"], "requirements_document"),
    ("test_results", "must_have_tests", True, "code_changes"),
])
def test_a_gate_criterion_must_fit_its_artifact_type(kind, criterion, value, fits):
    """A criterion on a type that lacks the field it reads could never pass: refused, naming
    the field and the types it fits."""
    with pytest.raises(InvalidTicketError, match=rf"gates\.DESIGN\.artifacts\.{kind}\.{criterion}: .*fits: .*{fits}"):
        check_gates({"DESIGN": {"artifacts": {kind: {criterion: value}}}}, DEFAULT.phases)
    # every default gate fits
    assert check_gates(DEFAULT_GATES, DEFAULT.phases)


# ------------------------------------------------------------------ tickets in the graph


def _ticket(tid: str, **kw) -> Ticket:
    fields = {"gates": dict(DEFAULT_GATES), "auto_advance": True} | kw
    return Ticket(id=tid, title="t", phases=DEFAULT, phase=DEFAULT.first, created_at=0.0, updated_at=0.0, **fields)


def _task(tid: str, ticket: str | None, phase: str | None, *deps: str):
    return dataclasses.replace(spec(tid, *deps), ticket_id=ticket, phase=phase)


def test_a_task_of_a_later_phase_is_held_until_its_ticket_gets_there():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.submit(_task("design", "k", "DESIGN"), _task("free", "other", "TESTING"), _task("now", "k", None))
    assert h.status("design") == "pending" and "reach phase DESIGN" in h.graph.tasks["design"].reason
    assert h.status("free") == "ready" and h.status("now") == "ready"  # a ticket nobody created is a label
    assert "design" not in h.graph.ready
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert h.status("design") == "pending"
    h.graph.tickets.move("k", "BLOCKED", h.now)
    assert "leave BLOCKED" in h.graph.tasks["design"].reason
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert h.status("design") == "pending"
    h.graph.tickets.move("k", "DESIGN", h.now)
    assert h.status("design") == "ready" and h.graph.tasks["design"].reason is None
    assert "design" in h.graph.ready


def test_held_tasks_are_held_again_after_a_restart():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.submit(_task("impl", "k", "IMPLEMENTATION"))
    changes = h.drain()
    fresh = Harness()
    task = changes.created[0]
    fresh.graph.restore([task], [], [], [], 2, fresh.now, tickets=[changes.tickets[0]])
    assert fresh.status("impl") == "pending" and "impl" not in fresh.graph.ready
    for phase in ("REQUIREMENTS", "DESIGN", "IMPLEMENTATION"):
        fresh.graph.tickets.move("k", phase, fresh.now)
    assert fresh.status("impl") == "ready"


def test_a_phase_move_through_a_failing_gate_is_refused_with_its_reasons_and_recorded():
    h = Harness()
    h.graph.tickets.create(_ticket("k"), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    with pytest.raises(GateBlockedError, match="missing artifact requirements_document") as err:
        h.graph.tickets.move("k", "DESIGN", h.now)
    assert err.value.reasons == ["missing artifact requirements_document"]
    h.graph.tickets.add_artifact("k", "requirements_document", REQ, h.now)
    h.graph.tickets.move("k", "DESIGN", h.now, reason="reviewed", by="ann")
    changes = h.drain()
    assert [(c.from_phase, c.to_phase, c.by) for c in changes.phase_changes] == [
        (None, "BACKLOG", "runtime"), ("BACKLOG", "REQUIREMENTS", "driver"), ("REQUIREMENTS", "DESIGN", "ann")]
    assert changes.phase_changes[-1].gate == {"passed": True, "reasons": []}
    assert [g.passed for g in changes.gate_results] == [True, False, True]  # BACKLOG, then REQUIREMENTS twice
    types = [e.type for e in changes.events]
    assert types.count("ticket.phase.changed") == 2 and types.count("ticket.gate.evaluated") == 3
    assert types[0] == "ticket.created"


def test_auto_advance_when_the_last_task_of_the_phase_completes_and_its_gate_passes():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={"REQUIREMENTS": DEFAULT_GATES["REQUIREMENTS"]}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("r2", "k", "REQUIREMENTS"), _task("d1", "k", "DESIGN"))
    a = h.agent(caps=())
    assert sorted(h.claim(a)) == ["r1", "r2"]
    h.run(a, "r1", result={"summary": "scoped", "decisions": ["use ray"], "risks": "time"})
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS"
    h.run(a, "r2", result={"summary": "written", "artifacts": [{"type": "requirements_document", "content": REQ,
                                                                "path": "req.md"}]})
    ticket = h.graph.tickets.get("k")
    assert ticket.phase == "DESIGN" and h.status("d1") == "ready"
    ctx = ticket.context["phases"]["REQUIREMENTS"]
    assert ctx["tasks"] == 2 and ctx["summaries"] == ["r1: scoped", "r2: written"]
    assert ctx["decisions"] == ["use ray"] and ctx["risks"] == ["time"]
    assert ctx["artifacts"] == [{"type": "requirements_document", "path": "req.md", "task_id": "r2"}]
    seen = context_for(ticket, "DESIGN")
    assert list(seen["phases"]) == ["REQUIREMENTS"] and "REQUIREMENTS: r1: scoped; r2: written" in seen["summary"]
    assert context_for(ticket, "REQUIREMENTS")["phases"] == {}


def test_a_failing_gate_keeps_the_ticket_and_approval_releases_it():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={"BACKLOG": {"artifacts": {}, "approval": True}}), h.now)
    h.submit(_task("b1", "k", "BACKLOG"), _task("r1", "k", "REQUIREMENTS"))
    a = h.agent()
    h.claim(a)
    h.run(a, "b1", result={"summary": "triaged"})
    assert h.graph.tickets.get("k").phase == "BACKLOG" and h.status("r1") == "pending"
    assert h.graph.tickets.gate("k", h.now).reasons == ("waiting for approval of phase BACKLOG",)
    h.graph.tickets.approve("k", None, "lead", "ok", h.now)
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS" and h.status("r1") == "ready"


def test_cancelling_a_ticket_cancels_its_unfinished_tasks_at_once():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.submit(_task("a", "k", "BACKLOG"), _task("b", "k", "DESIGN"), _task("c", "k", None, "a"), _task("x", None, None))
    ticket, ids = h.graph.cancel_ticket("k", h.now)
    assert ids == ["a", "b", "c"] and ticket.status.value == "cancelled"
    assert [h.status(t) for t in ("a", "b", "c", "x")] == [None, None, None, "ready"]
    with pytest.raises(TicketClosedError):
        h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    with pytest.raises(TicketClosedError):
        h.submit(_task("late", "k", None))


def test_a_task_phase_its_ticket_does_not_have_is_refused():
    h = Harness()
    h.graph.tickets.create(_ticket("k"), h.now)
    with pytest.raises(InvalidTicketError, match="phase 'QA' is not a phase of ticket 'k'"):
        h.submit(_task("q", "k", "QA"))
    assert "q" not in h.graph.tasks


def test_context_is_bounded_and_the_summary_rule_cuts_long_text():
    ctx = None
    for i in range(50):
        ctx = aggregate(ctx, f"t{i}", {"summary": "s" * 1000, "decisions": [f"d{i}", 3], "risks": [f"r{i}"]})
    assert ctx["tasks"] == 50 and len(ctx["summaries"]) == MAX_CONTEXT_ITEMS == len(ctx["decisions"])
    assert all(len(s) <= 300 for s in ctx["summaries"]) and ctx["dropped"] == 3 * (50 - MAX_CONTEXT_ITEMS)
    text = summarize({f"P{i}": ctx for i in range(10)})
    assert len(text) <= MAX_SUMMARY_CHARS and text.endswith(" ...")
    assert aggregate(None, "t", "not a mapping")["tasks"] == 1


def test_a_ticket_with_a_custom_phase_set_holds_and_advances_by_its_own_table():
    review = PhaseSet.parse({"name": "review", "sequence": ["DRAFT", "REVIEW", "PUBLISHED"],
                             "transitions": {"DRAFT": ["REVIEW"], "REVIEW": ["PUBLISHED", "DRAFT"]}})
    h = Harness()
    gates = check_gates({"REVIEW": {"artifacts": {"note": {}}, "approval": True}}, review.phases)
    h.graph.tickets.create(Ticket("k", "doc", review, review.first, h.now, h.now, gates=gates), h.now)
    h.submit(_task("write", "k", "DRAFT"), _task("check", "k", "REVIEW"))
    assert h.status("write") == "ready" and h.status("check") == "pending"
    a = h.agent()
    h.claim(a)
    h.run(a, "write", result={"summary": "first draft"})
    assert h.graph.tickets.get("k").phase == "REVIEW" and h.status("check") == "ready"
    with pytest.raises(IllegalPhaseMoveError, match=r"allowed: PUBLISHED, DRAFT"):
        h.graph.tickets.move("k", "BLOCKED", h.now)
    h.claim(a)
    h.run(a, "check", result={"artifacts": [{"type": "note", "content": {"text": "fine"}}]})
    assert h.graph.tickets.gate("k", h.now).reasons == ("waiting for approval of phase REVIEW",)
    h.graph.tickets.approve("k", "REVIEW", "ed", "", h.now)
    ticket = h.graph.tickets.get("k")
    assert ticket.phase == "PUBLISHED" and ticket.status.value == "done"
    assert context_for(ticket, "PUBLISHED")["summary"].startswith("DRAFT: write: first draft")


# ------------------------------------------------------------------ regressions (break-it findings)


def test_a_phase_less_task_of_a_ticket_never_advances_it():
    """A task with no phase belongs to no phase: its completion adds to the current phase's
    context but moves nothing; only the last task of the current phase advances the ticket."""
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.submit(*[_task(f"t{i}", "k", None) for i in range(3)], _task("b", "k", "BACKLOG"))
    a = h.agent(capacity=8)
    h.claim(a)
    for i in range(3):
        h.run(a, f"t{i}", result={"summary": f"s{i}"})
        assert h.graph.tickets.get("k").phase == "BACKLOG"
    assert h.graph.tickets.get("k").context["phases"]["BACKLOG"]["tasks"] == 3
    h.run(a, "b")
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS"


def _split_harness() -> Harness:
    h = Harness()
    h.graph = TaskGraph(lease_ttl=30.0, rng=random.Random(7), read_specs=read_specs(10_000))
    return h


@pytest.mark.parametrize(("cancel", "child", "match"), [
    (False, {"phase": "NOPE"}, r"task 'kid': phase 'NOPE' is not a phase of ticket 'k'"),
    (True, {}, r"task 'kid': ticket 'k' is cancelled"),
])
def test_split_children_pass_the_ticket_checks(cancel, child, match):
    """A split child its ticket refuses fails the splitting attempt, naming the child; none is created."""
    h = _split_harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    if cancel:
        h.graph.cancel_ticket("k", h.now)
    h.submit(spec("p"))
    a = h.agent()
    h.claim(a)
    h.start(a, "p")
    kids = parse_new_tasks([{"id": "kid", "type": "t", "ticket_id": "k", **child}], 10_000)
    h.graph.apply_report(a, Report("finished", "p", 1, AttemptOutcome.COMPLETED, None, None, kids), h.now)
    assert "kid" not in h.graph.tasks and h.status("p") is None
    failed = [e for e in h.drain().events if e.entity_id == "p" and e.type == "task.failed"]
    assert failed and re.search(match, failed[-1].payload["error"]) and "InvalidSplitError" in failed[-1].payload["error"]


def test_a_loop_round_its_ticket_refuses_fails_the_loop():
    h = _split_harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    loop = LoopSpec(id="L", check="c", until={"key": "v", "equals": 1}, max_rounds=3, ticket_id="k",
                    body=[{"id": "b", "type": "t", "phase": "NOPE"}]).to_new_tasks()[0]
    h.submit(spec("c"), loop, spec("after", "L"))
    a = h.agent()
    h.claim(a)
    h.run(a, "c", result={"v": 0})
    assert "L.r2.b" not in h.graph.tasks and h.status("L") is None and h.status("after") is None
    errors = [e.payload.get("error", "") for e in h.drain().events if e.entity_id == "L" and e.type == "task.failed"]
    assert errors and "could not start round 2" in errors[-1] and "phase 'NOPE' is not a phase of ticket 'k'" in errors[-1]


def test_leaving_blocked_goes_back_at_most_to_the_phase_it_was_blocked_from():
    h = Harness()
    h.graph.tickets.create(_ticket("k"), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.graph.tickets.move("k", "BLOCKED", h.now)
    with pytest.raises(IllegalPhaseMoveError, match=r"BLOCKED to TESTING \(allowed: BACKLOG, REQUIREMENTS\)"):
        h.graph.tickets.move("k", "TESTING", h.now)
    h.graph.tickets.move("k", "BACKLOG", h.now)
    assert h.graph.tickets.get("k").phase == "BACKLOG"


def test_only_the_current_phase_can_be_approved_and_only_if_its_gate_asks():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={"DESIGN": {"artifacts": {}, "approval": True}}, auto_advance=False), h.now)
    for phase, match in [("DONE", "only its current phase BACKLOG"), ("BLOCKED", "only its current phase"),
                         ("DESIGN", "only its current phase BACKLOG can be approved, not DESIGN"),
                         (None, "gate of phase BACKLOG asks for no approval")]:
        with pytest.raises(InvalidTicketError, match=match):
            h.graph.tickets.approve("k", phase, "lead", "", h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.graph.tickets.move("k", "DESIGN", h.now)
    h.graph.tickets.approve("k", "DESIGN", "lead", "", h.now)
    assert h.graph.tickets.gate("k", h.now).passed


def test_a_regression_voids_the_approvals_and_artifacts_of_the_phases_re_entered():
    gates = {"IMPLEMENTATION": {"artifacts": {"note": {}}, "approval": True}}
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates=gates, auto_advance=False), h.now)
    for phase in ("REQUIREMENTS", "DESIGN", "IMPLEMENTATION"):
        h.graph.tickets.move("k", phase, h.now)
    h.graph.tickets.add_artifact("k", "note", {"text": "done"}, h.now)
    h.graph.tickets.approve("k", None, "lead", "", h.now)
    h.graph.tickets.move("k", "TESTING", h.now)
    h.graph.tickets.move("k", "IMPLEMENTATION", h.now, reason="tests found a bug")
    assert h.graph.tickets.gate("k", h.now).reasons == (
        "missing artifact note", "waiting for approval of phase IMPLEMENTATION")
    changes = h.drain()  # the mark is stored with the ticket: a restarted scheduler keeps it
    fresh = Harness()
    fresh.graph.restore([], [], [], [], 1, fresh.now, tickets=[changes.tickets[-1]], artifacts=changes.artifacts)
    assert fresh.graph.tickets.gate("k", fresh.now).reasons == h.graph.tickets.gate("k", h.now).reasons
    with pytest.raises(GateBlockedError):
        h.graph.tickets.move("k", "TESTING", h.now)
    h.graph.tickets.add_artifact("k", "note", {"text": "fixed"}, h.now)
    h.graph.tickets.approve("k", None, "lead", "", h.now)
    h.graph.tickets.move("k", "TESTING", h.now)
    # blocked and back to the same phase is no regression: what it had still counts
    h.graph.tickets.move("k", "BLOCKED", h.now)
    h.graph.tickets.move("k", "TESTING", h.now)
    assert h.graph.tickets.get("k").phase == "TESTING"


# ------------------------------------------------------------------ a failed task vs its phase, recall


def _history(changes) -> list[tuple]:
    return [(c.from_phase, c.to_phase, c.by) for c in changes.phase_changes]


def test_a_failed_task_of_the_current_phase_blocks_the_ticket_and_the_move_back_acknowledges_it():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={"REQUIREMENTS": DEFAULT_GATES["REQUIREMENTS"]}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("r2", "k", "REQUIREMENTS"), _task("d1", "k", "DESIGN"))
    a = h.agent()
    assert sorted(h.claim(a)) == ["r1", "r2"]
    h.drain()
    h.run(a, "r1", outcome=AttemptOutcome.PERMANENT_FAILURE, error="ValueError: no\nscope\x00")
    ticket = h.graph.tickets.get("k")
    assert (ticket.phase, ticket.previous_phase) == ("BLOCKED", "REQUIREMENTS")
    changes = h.drain()
    assert _history(changes) == [("REQUIREMENTS", "BLOCKED", "omoi-ray")]
    # one line, control characters shown as the storable cleaner shows them everywhere
    why = "task 'r1' failed: ValueError: no scope\ufffd"
    assert changes.phase_changes[0].reason == why
    moved = [e.payload for e in changes.events if e.type == "ticket.phase.changed"]
    assert moved == [{"from": "REQUIREMENTS", "to": "BLOCKED", "reason": why, "by": "omoi-ray"}]
    # r2 was claimed: it goes on, and its result counts for its phase; the ticket stays blocked
    h.run(a, "r2", result={"summary": "half", "artifacts": [{"type": "requirements_document", "content": REQ}]})
    assert ticket.phase == "BLOCKED" and ticket.context["phases"]["REQUIREMENTS"]["tasks"] == 1
    # back to the phase: the failure is acknowledged; a replacement task takes it through its gate
    h.graph.tickets.move("k", "REQUIREMENTS", h.now, reason="r1 dropped, r3 instead", by="ann")
    h.submit(_task("r3", "k", "REQUIREMENTS"))
    h.claim(a)
    h.run(a, "r3", result={"summary": "done"})
    assert ticket.phase == "DESIGN" and h.status("d1") == "ready"
    assert _history(h.drain())[-2:] == [("BLOCKED", "REQUIREMENTS", "ann"), ("REQUIREMENTS", "DESIGN", "auto-advance")]


def test_after_the_move_back_no_replacement_is_needed_an_artifact_lets_the_phase_advance():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={"REQUIREMENTS": DEFAULT_GATES["REQUIREMENTS"]}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("r2", "k", "REQUIREMENTS"))
    a = h.agent()
    h.claim(a)
    h.run(a, "r1", result={"summary": "most of it"})
    h.run(a, "r2", attempt=1, outcome=AttemptOutcome.PERMANENT_FAILURE, error="boom")
    assert h.graph.tickets.get("k").phase == "BLOCKED"
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS"  # entering a phase advances nothing by itself
    h.graph.tickets.add_artifact("k", "requirements_document", REQ, h.now)
    assert h.graph.tickets.get("k").phase == "DESIGN"


def test_every_end_failed_for_good_but_a_cancel_blocks_the_phase():
    assert FAILS_PHASE == FAILED_FOR_GOOD - {TaskStatus.CANCELLED}


def test_a_timed_out_task_of_the_current_phase_blocks_the_ticket_too():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.submit(dataclasses.replace(spec("slow", timeout=5.0, max_retries=0), ticket_id="k", phase="BACKLOG"))
    a = h.agent()
    h.claim(a)
    h.start(a, "slow")
    h.tick(6.0)
    assert h.graph.tickets.get("k").phase == "BLOCKED"
    assert h.drain().phase_changes[-1].reason == "task 'slow' timed_out: timed out after 5s"


def test_an_upstream_failure_blocks_a_phase_less_or_other_phase_task_failure_does_not():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("free", "k", None), _task("up", None, None), _task("r1", "k", "REQUIREMENTS", "up"),
             _task("d1", "k", "DESIGN", "up"))
    a = h.agent()
    h.claim(a)
    h.run(a, "free", outcome=AttemptOutcome.PERMANENT_FAILURE, error="boom")  # a phase-less task: not governed
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS" and "unacknowledged" not in h.graph.tickets.get("k").context
    h.run(a, "up", outcome=AttemptOutcome.PERMANENT_FAILURE, error="boom")
    assert h.status("r1") is None and h.status("d1") is None  # both upstream_failed
    changes = h.drain()
    assert _history(changes)[-2:] == [("BACKLOG", "REQUIREMENTS", "driver"), ("REQUIREMENTS", "BLOCKED", "omoi-ray")]
    assert changes.phase_changes[-1].reason == "task 'r1' upstream_failed: upstream task 'up' failed"
    # d1 (DESIGN, held) moved nothing


def test_a_cancelled_task_never_blocks_but_holds_auto_advance_until_a_move_acknowledges_it():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("r2", "k", "REQUIREMENTS"), _task("r3", "k", "REQUIREMENTS"))
    a = h.agent()
    h.claim(a)
    h.graph.cancel("r1", h.now)
    ticket = h.graph.tickets.get("k")
    assert ticket.phase == "REQUIREMENTS" and ticket.context["unacknowledged"] == {"count": 1, "tasks": ["r1"]}
    h.run(a, "r2")
    h.run(a, "r3")  # every live task completed, the gate passes, but r1 never completed: no advance
    assert ticket.phase == "REQUIREMENTS"
    h.graph.tickets.add_artifact("k", "note", {"text": "r1 not needed"}, h.now)
    assert ticket.phase == "REQUIREMENTS"
    h.graph.tickets.move("k", "BLOCKED", h.now)  # blocked and back: the operator's acknowledgement
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert "unacknowledged" not in ticket.context
    h.graph.tickets.add_artifact("k", "note", {"text": "go"}, h.now)
    assert ticket.phase == "DESIGN"
    # a driver's move forward through the gate acknowledges a cancel too
    h.submit(_task("d1", "k", "DESIGN"), _task("d2", "k", "DESIGN"))
    h.graph.cancel("d1", h.now)
    h.graph.cancel("d2", h.now)
    assert ticket.context["unacknowledged"] == {"count": 2, "tasks": ["d1", "d2"]}
    h.graph.tickets.move("k", "IMPLEMENTATION", h.now)
    assert ticket.phase == "IMPLEMENTATION" and "unacknowledged" not in ticket.context


def test_an_upstream_failure_whose_root_was_cancelled_is_a_cancel_not_a_block():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("r2", "k", "REQUIREMENTS", "r1"),
             _task("r3", "k", "REQUIREMENTS", "r2"), _task("r4", "k", "REQUIREMENTS"))
    a = h.agent()
    assert h.claim(a) == ["r1", "r4"]
    h.drain()
    h.graph.cancel("r1", h.now)  # r2, and through it r3, end upstream_failed
    changes = h.drain()
    assert [e.payload["reason"] for e in changes.events if e.type == "task.upstream_failed"] == [
        "upstream task 'r1' cancelled", "upstream task 'r1' cancelled"]
    ticket = h.graph.tickets.get("k")
    assert ticket.phase == "REQUIREMENTS" and not changes.phase_changes
    assert ticket.context["unacknowledged"] == {"count": 3, "tasks": ["r1", "r2", "r3"]}
    h.run(a, "r4")  # the last live task completed, but three ends are unacknowledged: no advance
    assert ticket.phase == "REQUIREMENTS"
    # a dependent submitted after its dependency was cancelled ends the same way
    h.submit(_task("r5", "k", "REQUIREMENTS", "r1"), stored={"r1": StoredTask("r1", TaskStatus.CANCELLED, "")})
    assert h.status("r5") is None and ticket.phase == "REQUIREMENTS"
    assert ticket.context["unacknowledged"]["count"] == 4
    # a failed root still blocks through its dependents (the cancel above did not change that)
    h.graph.tickets.move("k", "DESIGN", h.now)
    h.submit(_task("d1", None, None), _task("d2", "k", "DESIGN", "d1"))
    h.claim(a)
    h.run(a, "d1", outcome=AttemptOutcome.PERMANENT_FAILURE, error="boom")
    assert ticket.phase == "BLOCKED"
    assert h.drain().phase_changes[-1].reason == "task 'd2' upstream_failed: upstream task 'd1' failed"


def test_a_task_the_storage_backstop_forgets_ends_nothing_its_ticket_must_acknowledge():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.drain()
    h.submit(_task("r1", "k", "REQUIREMENTS"))
    # its row collided with a stored one: it leaves memory as if never created
    dropped, _ = h.graph.drop_created(h.drain(), {"r1": "task id 'r1' already names a stored task"}, h.now)
    ticket = h.graph.tickets.get("k")
    assert dropped == ["r1"] and "r1" not in h.graph.tasks
    assert "unacknowledged" not in ticket.context and not h.graph.tickets.live_tasks["k"].get("REQUIREMENTS")
    h.submit(_task("r2", "k", "REQUIREMENTS"))
    a = h.agent()
    h.claim(a)
    h.run(a, "r2")  # the phase's only task completed: it advances
    assert ticket.phase == "DESIGN"


def test_a_dependent_of_a_stored_task_doomed_by_a_cancel_ends_as_a_cancel_too():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    # r2 ended upstream_failed because its root was cancelled, and left memory before r3 came
    stored = {"r2": StoredTask("r2", TaskStatus.UPSTREAM_FAILED, "", upstream_cancelled=True)}
    h.submit(_task("r3", "k", "REQUIREMENTS", "r2"), stored=stored)
    ticket = h.graph.tickets.get("k")
    assert h.status("r3") is None and ticket.phase == "REQUIREMENTS"  # not blocked
    assert ticket.context["unacknowledged"] == {"count": 1, "tasks": ["r3"]}
    assert [t.upstream_cancelled for t in h.drain().created] == [True]  # stored, for its own dependents
    # one whose root failed still blocks
    h.submit(_task("r4", "k", "REQUIREMENTS", "r2"), stored={"r2": StoredTask("r2", TaskStatus.UPSTREAM_FAILED, "")})
    assert ticket.phase == "BLOCKED"


def test_a_dropped_move_reloads_the_stored_phase_and_releases_what_the_move_recalled():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"))
    stored = dataclasses.replace(h.graph.tickets.get("k"), context={})
    seq = h.graph.tickets.history_seq["k"]
    h.graph.tickets.move("k", "BLOCKED", h.now)  # the change the store refuses
    assert h.status("r1") == "pending"
    h.graph.tickets.reload("k", stored, [], seq, h.now)
    assert h.graph.tickets.get("k").phase == "REQUIREMENTS" and h.status("r1") == "ready"
    assert h.graph.tasks["r1"].reason is None


def test_a_dropped_ticket_creation_leaves_its_tasks_unheld():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)  # the change the store refuses
    h.submit(_task("d1", "k", "DESIGN"), _task("d2", "k", "DESIGN", "d1"))
    assert h.status("d1") == "pending"
    h.graph.tickets.reload("k", None, [], 0, h.now)
    assert h.status("d1") == "ready" and h.status("d2") == "pending"  # d2 waits on d1, no longer on k
    a = h.agent()
    h.claim(a)
    h.run(a, "d1")
    assert h.status("d2") == "ready"


def test_a_failure_where_the_table_has_no_blocked_move_is_left_unacknowledged():
    phases = PhaseSet.parse({"name": "review", "sequence": ["DRAFT", "REVIEW", "PUBLISHED"],
                             "transitions": {"DRAFT": ["REVIEW"], "REVIEW": ["PUBLISHED", "DRAFT"]}})
    h = Harness()
    h.graph.tickets.create(Ticket("k", "t", phases, "DRAFT", 0.0, 0.0), h.now)
    h.submit(_task("a", "k", "DRAFT"), _task("b", "k", "DRAFT"))
    w = h.agent()
    h.claim(w)
    h.run(w, "a", outcome=AttemptOutcome.PERMANENT_FAILURE, error="boom")
    h.run(w, "b")
    ticket = h.graph.tickets.get("k")
    assert ticket.phase == "DRAFT" and ticket.context["unacknowledged"] == {"count": 1, "tasks": ["a"]}
    h.graph.tickets.move("k", "REVIEW", h.now)  # the driver decides
    assert "unacknowledged" not in ticket.context


def test_moving_to_blocked_recalls_ready_tasks_and_leaving_releases_them_claimed_ones_go_on():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("run", "k", "REQUIREMENTS"), _task("free", "k", None))
    a = h.agent(capacity=2)
    assert sorted(h.claim(a)) == ["free", "run"]
    h.submit(_task("r1", "k", "REQUIREMENTS"), _task("free2", "k", None))
    assert h.status("r1") == "ready" and "r1" in h.graph.ready
    h.drain()
    h.graph.tickets.move("k", "BLOCKED", h.now)
    task = h.graph.tasks["r1"]
    assert (task.status.value, "r1" in h.graph.ready) == ("pending", False)
    assert task.reason == "waiting for ticket 'k' to leave BLOCKED"
    assert h.status("run") == "claimed" and h.status("free2") == "ready"  # claimed go on; phase-less not governed
    held = [e for e in h.drain().events if e.type == "task.held"]
    assert [(e.entity_id, e.payload["reason"]) for e in held] == [("r1", "waiting for ticket 'k' to leave BLOCKED")]
    h.run(a, "run")  # a claimed task's completion counts as usual, the ticket stays blocked
    assert h.graph.tickets.get("k").phase == "BLOCKED"
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert (task.status.value, "r1" in h.graph.ready, task.reason) == ("ready", True, None)


def test_a_regression_recalls_ready_tasks_of_the_phases_now_ahead():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    for phase in ("REQUIREMENTS", "DESIGN", "IMPLEMENTATION", "TESTING"):
        h.graph.tickets.move("k", phase, h.now)
    h.submit(*[dataclasses.replace(_task(t, "k", p), requires=frozenset({"nobody"}))
               for t, p in (("i1", "IMPLEMENTATION"), ("t1", "TESTING"))])
    assert h.status("i1") == h.status("t1") == "ready"
    h.graph.tickets.move("k", "IMPLEMENTATION", h.now, reason="a bug")
    assert h.status("i1") == "ready" and h.status("t1") == "pending" and "t1" not in h.graph.ready
    assert "reach phase TESTING" in h.graph.tasks["t1"].reason


def test_a_retry_or_a_requeue_while_blocked_is_held_and_released_on_leaving():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("flaky", "k", "REQUIREMENTS"), _task("lost", "k", "REQUIREMENTS"))
    a = h.agent()
    h.claim(a)
    h.run(a, "flaky", outcome=AttemptOutcome.FAILED, error="try again")
    h.start(a, "lost")
    assert h.status("flaky") == "retry_wait"
    h.graph.tickets.move("k", "BLOCKED", h.now)
    h.tick(120.0)  # past the backoff: held, not ready
    h.graph.agent_lost("a1", "i1", h.now, "died")  # "lost" is requeued, then held
    for tid in ("flaky", "lost"):
        assert (h.status(tid), tid in h.graph.ready) == ("pending", False)
        assert "leave BLOCKED" in h.graph.tasks[tid].reason
    assert h.event_types("lost")[-2:] == ["task.requeued", "task.held"]
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    assert h.status("flaky") == h.status("lost") == "ready"


def test_recalled_tasks_are_held_again_after_a_restart_a_stored_ready_row_too():
    h = Harness()
    h.graph.tickets.create(_ticket("k", gates={}), h.now)
    h.graph.tickets.move("k", "REQUIREMENTS", h.now)
    h.submit(_task("r1", "k", "REQUIREMENTS"))
    ready_row = dataclasses.replace(h.drain().created[0])
    assert ready_row.status.value == "ready"
    h.graph.tickets.move("k", "BLOCKED", h.now)
    changes = h.drain()
    for rows in ([changes.updated[0]], [ready_row]):  # as stored now, and as older code left it
        fresh = Harness()
        fresh.graph.restore([dataclasses.replace(r) for r in rows], [], [], [], 2, fresh.now,
                            tickets=[dataclasses.replace(changes.tickets[-1])])
        task = fresh.graph.tasks["r1"]
        assert (task.status.value, "r1" in fresh.graph.ready) == ("pending", False)
        assert "leave BLOCKED" in task.reason
        fresh.graph.tickets.move("k", "REQUIREMENTS", fresh.now)
        assert fresh.status("r1") == "ready" and "r1" in fresh.graph.ready


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "dep", "complete", "fail", "cancel", "back"]), st.integers(0, 5)),
                max_size=40))
def test_task_ends_against_a_model_of_blocking_and_acknowledgement(steps):
    """Random task ends and moves back against a model of the rules: a failure of a current-phase
    task blocks the ticket, a cancel holds auto-advance until the next move, a move back from
    BLOCKED acknowledges, ends of tasks of a phase the ticket left change nothing, and the last
    completion of a phase with nothing unacknowledged advances it (no gates here). A task may
    depend on another (``dep``): when that one fails its dependents (and theirs) end
    ``upstream_failed`` as failures, when it is cancelled they end as cancels."""
    h = Harness()
    t = h.graph.tickets.create(_ticket("k", gates={}), h.now)
    a = h.agent(capacity=1000)
    order = DEFAULT.sequence
    phase, prev, unack, n = "BACKLOG", None, False, 0
    tasks: dict[str, str] = {}  # the tasks in memory -> their phase
    children: dict[str, list[str]] = {}
    claimed: set[str] = set()

    def ended(p: str, how: str) -> None:
        nonlocal phase, prev, unack
        if p != phase:
            return
        if how == "fail":
            phase, prev, unack = "BLOCKED", p, False
        elif how == "cancel":
            unack = True
        elif p not in tasks.values() and not unack:
            phase = order[order.index(p) + 1]

    for action, pick in steps:
        if phase == "DONE":
            break
        ids = sorted(claimed if action in ("complete", "fail") else tasks)
        tid = ids[pick % len(ids)] if ids else None
        if action in ("submit", "dep") and phase != "BLOCKED" and (action == "submit" or tid is not None):
            n += 1
            deps = (tid,) if action == "dep" else ()
            h.submit(_task(f"t{n}", "k", phase, *deps))
            tasks[f"t{n}"] = phase
            if action == "dep":
                children.setdefault(tid, []).append(f"t{n}")
        elif action == "back" and phase == "BLOCKED":
            h.graph.tickets.move("k", prev, h.now)
            phase, unack = prev, False
        elif action in ("complete", "fail", "cancel") and tid is not None:
            claimed.discard(tid)
            if action == "cancel":
                h.graph.cancel(tid, h.now)
            else:
                outcome = AttemptOutcome.COMPLETED if action == "complete" else AttemptOutcome.PERMANENT_FAILURE
                h.run(a, tid, outcome=outcome, error=None if action == "complete" else "boom")
            ended(tasks.pop(tid), action)
            doomed = [] if action == "complete" else list(children.get(tid, ()))
            while doomed:  # its dependents, direct or not, end upstream_failed as it ended
                dep = doomed.pop(0)
                if dep in tasks:
                    ended(tasks.pop(dep), action)
                    doomed.extend(children.get(dep, ()))
        claimed.update(h.claim(a))  # whatever became ready (none is held unless BLOCKED)
        assert (t.phase, bool(t.context.get("unacknowledged"))) == (phase, unack)
        assert all(h.status(x) is not None for x in tasks) and claimed <= set(tasks)
    blocks = [c for c in h.drain().phase_changes if c.to_phase == "BLOCKED"]
    assert all(c.by == "omoi-ray" and (re.fullmatch(r"task 't\d+' failed: boom", c.reason)
               or re.fullmatch(r"task 't\d+' upstream_failed: upstream task 't\d+' failed", c.reason))
               for c in blocks), [c.reason for c in blocks]
