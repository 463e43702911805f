"""Gates: what a phase must produce before a ticket leaves it, as data, and their evaluation.

An *artifact* is ``(type, content)``: ``type`` is a name in ``ARTIFACT_TYPES`` and ``content``
a mapping whose fields that table declares. Tasks hand artifacts in with their result
(``{"artifacts": [{"type": ..., "content": {...}, "path": ...}]}``) and drivers with
``rt.tickets.add_artifact``; ``approval`` artifacts are made only by ``rt.tickets.approve``.

A *gate* is ``{"artifacts": {type: {criterion: value}}, "approval": bool}`` per phase;
``DEFAULT_GATES`` are the original's:

============== ============================================================================
phase          requires
============== ============================================================================
REQUIREMENTS   ``requirements_document``: text of at least 500 characters, sections
               ``scope`` and ``acceptance_criteria``
IMPLEMENTATION ``code_changes`` with ``has_tests``; ``test_coverage`` of at least 80 %
TESTING        ``test_results`` with no failure (and at least one pass); ``test_evidence``
============== ============================================================================

Rules:
- A gate is evaluated against the *latest* artifact of each type added in its phase.
- It passes when every required artifact is there and meets every criterion, the approval
  (if required) was given, and no task of the phase is unfinished; otherwise every reason it
  fails is listed (``GateOutcome.reasons``), not just the first.
- A phase without a gate passes when its tasks are finished.
- The criteria (``CRITERIA``) are a table: name -> (the value it takes, check); a gate may put a
  criterion only on an artifact type that declares every field it reads (``CRITERION_FIELDS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omoi_ray.errors import InvalidArtifactError, InvalidTicketError

MAX_ARTIFACT_TEXT = 200_000
MAX_LIST_ITEMS = 1000
MAX_ITEM_CHARS = 1000

#: field kinds an artifact's content may hold: kind -> (check, what it is)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "text": (lambda v: isinstance(v, str) and len(v) <= MAX_ARTIFACT_TEXT and "\x00" not in v,
             f"a string of at most {MAX_ARTIFACT_TEXT} characters"),
    "names": (lambda v: isinstance(v, list) and len(v) <= MAX_LIST_ITEMS
              and all(isinstance(x, str) and 0 < len(x) <= MAX_ITEM_CHARS and "\x00" not in x for x in v),
              f"a list of at most {MAX_LIST_ITEMS} non-empty strings"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "percent": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and 0 <= v <= 100, "a number from 0 to 100"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10**9,
              "a whole number from 0 to 10**9"),
}

#: artifact type -> {content field: (kind, required)}
ARTIFACT_TYPES: dict[str, dict[str, tuple[str, bool]]] = {
    "requirements_document": {"text": ("text", True), "sections": ("names", False)},
    "design_document": {"text": ("text", True), "sections": ("names", False)},
    "code_changes": {"files": ("names", True), "has_tests": ("flag", True)},
    "test_coverage": {"percentage": ("percent", True)},
    "test_results": {"passed": ("count", True), "failed": ("count", True)},
    "test_evidence": {"text": ("text", True)},
    "deployment_record": {"text": ("text", True)},
    "note": {"text": ("text", True)},
    "approval": {"by": ("text", True), "note": ("text", False)},
}
#: artifact types only the runtime makes (``approve``), never a task or ``add_artifact``
RESERVED_TYPES = frozenset({"approval"})


def _min_length(content: Mapping[str, Any], want: Any) -> str | None:
    n = len(content.get("text", ""))
    return None if n >= want else f"text is {n} characters, at least {want} required"


def _required_sections(content: Mapping[str, Any], want: Any) -> str | None:
    have = {s.strip().lower() for s in content.get("sections", ())}
    missing = [s for s in want if s.lower() not in have]
    return None if not missing else f"missing section(s) {', '.join(missing)}"


def _must_have_tests(content: Mapping[str, Any], want: Any) -> str | None:
    return None if not want or content.get("has_tests") else "has no tests"


def _min_percentage(content: Mapping[str, Any], want: Any) -> str | None:
    got = content.get("percentage", 0)
    return None if got >= want else f"{got}% is below {want}%"


def _all_passed(content: Mapping[str, Any], want: Any) -> str | None:
    if not want:
        return None
    failed, passed = content.get("failed", 0), content.get("passed", 0)
    if failed:
        return f"{failed} failed"
    return None if passed else "no test passed"


#: criterion -> (the value it takes: a check and its description, the evaluation)
CRITERIA: dict[str, tuple[Callable[[Any], bool], str, Callable[[Mapping[str, Any], Any], str | None]]] = {
    "min_length": (_KINDS["count"][0], _KINDS["count"][1], _min_length),
    "required_sections": (_KINDS["names"][0], _KINDS["names"][1], _required_sections),
    "must_have_tests": (_KINDS["flag"][0], _KINDS["flag"][1], _must_have_tests),
    "min_percentage": (_KINDS["percent"][0], _KINDS["percent"][1], _min_percentage),
    "all_passed": (_KINDS["flag"][0], _KINDS["flag"][1], _all_passed),
}
#: criterion -> the content fields it reads: it fits an artifact type that declares them all
CRITERION_FIELDS: dict[str, tuple[str, ...]] = {
    "min_length": ("text",),
    "required_sections": ("sections",),
    "must_have_tests": ("has_tests",),
    "min_percentage": ("percentage",),
    "all_passed": ("passed", "failed"),
}

#: the original's gates (see the module docstring)
DEFAULT_GATES: dict[str, dict[str, Any]] = {
    "REQUIREMENTS": {"artifacts": {"requirements_document": {
        "min_length": 500, "required_sections": ["scope", "acceptance_criteria"]}}},
    "IMPLEMENTATION": {"artifacts": {"code_changes": {"must_have_tests": True},
                                     "test_coverage": {"min_percentage": 80}}},
    "TESTING": {"artifacts": {"test_results": {"all_passed": True}, "test_evidence": {}}},
}


@dataclass(frozen=True, slots=True)
class GateOutcome:
    """A gate's verdict: ``passed``, and every reason it did not (empty when it passed)."""

    passed: bool
    reasons: tuple[str, ...] = ()


def check_artifact(ticket_id: str, kind: Any, content: Any, *, reserved_ok: bool = False) -> None:
    """Raise ``InvalidArtifactError`` unless ``content`` fits artifact type ``kind``.

    Args:
        ticket_id: named in the message.
        kind: the artifact type (a key of ``ARTIFACT_TYPES``).
        content: a mapping of the fields that type declares (no others).
        reserved_ok: allow ``RESERVED_TYPES`` (the runtime's own ``approval``).
    """
    if not isinstance(kind, str) or kind not in ARTIFACT_TYPES or (kind in RESERVED_TYPES and not reserved_ok):
        known = ", ".join(sorted(set(ARTIFACT_TYPES) - RESERVED_TYPES))
        raise InvalidArtifactError(
            f"ticket '{ticket_id}': unknown artifact type {kind!r:.60} (known: {known})", ticket_id=ticket_id
        )
    if not isinstance(content, Mapping):
        raise InvalidArtifactError(f"ticket '{ticket_id}': artifact {kind}: content must be a mapping, not {content!r:.60}",
                                   ticket_id=ticket_id)
    fields = ARTIFACT_TYPES[kind]
    extra = [k for k in content if k not in fields]
    if extra:
        raise InvalidArtifactError(
            f"ticket '{ticket_id}': artifact {kind}: unknown field(s) {sorted(map(str, extra))} "
            f"(fields: {', '.join(fields)})", ticket_id=ticket_id)
    for name, (field_kind, required) in fields.items():
        if name not in content:
            if required:
                raise InvalidArtifactError(f"ticket '{ticket_id}': artifact {kind}: content.{name} is required",
                                           ticket_id=ticket_id)
            continue
        check, what = _KINDS[field_kind]
        if not check(content[name]):
            raise InvalidArtifactError(
                f"ticket '{ticket_id}': artifact {kind}: content.{name} must be {what}, not {content[name]!r:.60}",
                ticket_id=ticket_id)


def check_gates(gates: Any, phases: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A gate declaration (``{phase: {"artifacts": {type: {criterion: value}}, "approval": bool}}``),
    validated and normalised; raise ``InvalidTicketError`` naming the field at fault."""
    if not isinstance(gates, Mapping):
        raise InvalidTicketError(f"gates must be a mapping of phase -> gate, not {gates!r:.60}")
    out: dict[str, dict[str, Any]] = {}
    for phase, gate in gates.items():
        if phase not in phases:
            raise InvalidTicketError(f"gates names unknown phase {phase!r:.60} (phases: {', '.join(phases)})")
        if not isinstance(gate, Mapping) or set(gate) - {"artifacts", "approval"}:
            raise InvalidTicketError(f"gates.{phase} must be a mapping with 'artifacts' and/or 'approval'")
        approval = gate.get("approval", False)
        if not isinstance(approval, bool):
            raise InvalidTicketError(f"gates.{phase}.approval must be true or false, not {approval!r:.60}")
        artifacts = gate.get("artifacts", {})
        if not isinstance(artifacts, Mapping):
            raise InvalidTicketError(f"gates.{phase}.artifacts must be a mapping of type -> criteria")
        norm: dict[str, dict[str, Any]] = {}
        for kind, criteria in artifacts.items():
            if kind not in ARTIFACT_TYPES or kind in RESERVED_TYPES:
                raise InvalidTicketError(f"gates.{phase}.artifacts names unknown artifact type {kind!r:.60}")
            if not isinstance(criteria, Mapping):
                raise InvalidTicketError(f"gates.{phase}.artifacts.{kind} must be a mapping of criterion -> value")
            for name, value in criteria.items():
                if name not in CRITERIA:
                    raise InvalidTicketError(
                        f"gates.{phase}.artifacts.{kind}: unknown criterion {name!r:.60} (known: {', '.join(CRITERIA)})")
                if not all(f in ARTIFACT_TYPES[kind] for f in CRITERION_FIELDS[name]):
                    fits = sorted(k for k in ARTIFACT_TYPES if k not in RESERVED_TYPES
                                  and all(f in ARTIFACT_TYPES[k] for f in CRITERION_FIELDS[name]))
                    raise InvalidTicketError(
                        f"gates.{phase}.artifacts.{kind}.{name}: criterion {name} does not fit artifact type "
                        f"{kind} (it fits: {', '.join(fits)})")
                check, what, _ = CRITERIA[name]
                if not check(value):
                    raise InvalidTicketError(f"gates.{phase}.artifacts.{kind}.{name} must be {what}, not {value!r:.60}")
            norm[kind] = dict(criteria)
        out[phase] = {"artifacts": norm, "approval": approval}
    return out


def evaluate(
    phase: str,
    gate: Mapping[str, Any] | None,
    artifacts: Sequence[tuple[str, Mapping[str, Any]]],
    unfinished: int = 0,
) -> GateOutcome:
    """Judge ``phase``'s gate.

    Args:
        phase: the phase being left (named in the reasons).
        gate: its declaration (as ``check_gates`` returns), or None for no gate.
        artifacts: ``(type, content)`` of the artifacts added in the phase, oldest first
            (approvals included).
        unfinished: how many of the ticket's tasks of this phase are not finished.

    Returns:
        ``GateOutcome(passed, reasons)``: every reason the gate fails, in a stable order.
    """
    reasons: list[str] = []
    if unfinished:
        reasons.append(f"{unfinished} task(s) of phase {phase} not finished")
    latest: dict[str, Mapping[str, Any]] = {}
    for kind, content in artifacts:
        latest[kind] = content
    if gate:
        for kind, criteria in gate.get("artifacts", {}).items():
            content = latest.get(kind)
            if content is None:
                reasons.append(f"missing artifact {kind}")
                continue
            for name, want in criteria.items():
                why = CRITERIA[name][2](content, want)
                if why is not None:
                    reasons.append(f"{kind}: {why}")
        if gate.get("approval") and "approval" not in latest:
            reasons.append(f"waiting for approval of phase {phase}")
    return GateOutcome(not reasons, tuple(reasons))
