"""Coordination specs at the edge: ``SyncSpec``, ``LoopSpec`` and ``SplitSpec``, and a submission
that mixes them with tasks.

Rules:
- Each spec is submitted with ``rt.submit([...])`` next to ``TaskSpec``s (or as a dict with
  ``"kind": "sync" | "loop" | "split"``); the submission stays all or nothing.
- A sync or loop becomes one handler-less task row (``kind``); its rules are in
  ``omoi_ray.core.coordination``. A ``SplitSpec`` is the static split: it becomes its children,
  each depending on ``parent`` and marked as its split (``coordination.split.created``).
- Every field is checked here, with a message naming the node and the field
  (``InvalidCoordinationError``); graph rules (unknown members, cycles) are the submission's.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from omoi_ray.core import storable
from omoi_ray.core.coordination import LOOP, SYNC, round_id
from omoi_ray.core.model import NewTask, Priority
from omoi_ray.errors import InvalidCoordinationError
from omoi_ray.specs.tasks import (
    TaskSpec,
    check_int,
    check_list,
    check_name,
    iter_task_specs,
    parse_new_tasks,
    submission_list,
)

#: payload sizes of nested tasks are checked against the runtime's limit by ``parse_submission``
_UNBOUNDED = 2**62
#: the most rounds a loop may declare
MAX_ROUNDS = 10_000
KINDS = ("sync", "loop", "split")


def _fingerprint(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        """Raises ``InvalidCoordinationError`` naming the node and every bad field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidCoordinationError(_describe(type(self).__name__, exc, data)) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class _OwnNode(_Node):
    """A node that is a task row of its own (sync, loop): its id and a task's grouping labels."""

    id: str
    ticket_id: str | None = None
    phase: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return check_name(value, "id")

    @field_validator("ticket_id", "phase", mode="before")
    @classmethod
    def _optional_name(cls, value: Any, info: Any) -> str | None:
        return None if value is None else check_name(value, info.field_name)


class SyncSpec(_OwnNode):
    """A sync point: completes when ``k`` of its ``members`` (task ids) completed.

    Args (fields):
        id: the sync's task id (its dependents name it in ``depends_on``).
        members: n task ids, distinct, in the submission or already stored.
        k: members that must complete, 1..n (default n).
        timeout: seconds from submission after which a sync still waiting fails (None: never).
        ticket_id, phase, priority: as a task's.

    Its result is ``{member id: member result}`` of the members completed when it became ready,
    in member order. Raises ``InvalidCoordinationError`` for a bad field, k out of range, or a
    duplicate member.
    """

    kind: Literal["sync"] = "sync"
    members: list[str]
    k: int | None = None
    timeout: float | None = None
    priority: Priority = Priority.MEDIUM

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, value: Any) -> list[str]:
        members = [check_name(m, "members entries") for m in check_list(value, "members")]
        if not members:
            raise ValueError("members must name at least one task")
        seen: set[str] = set()
        for m in members:
            if m in seen:
                raise ValueError(f"member '{m}' appears more than once")
            seen.add(m)
        return members

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> int | None:
        return None if value is None else check_int(value, "k", 1, 1_000_000)

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else storable.check_seconds(value, "timeout", maximum=storable.MAX_TIMEOUT_S)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Priority:
        return Priority.parse(value)

    def model_post_init(self, _context: Any) -> None:
        """Check k against n (``InvalidCoordinationError``)."""
        if self.k is not None and self.k > len(self.members):
            raise ValueError(f"k is {self.k}, more than its {len(self.members)} members")
        if self.id in self.members:
            raise ValueError("a sync cannot be its own member")

    def to_new_tasks(self) -> list[NewTask]:
        """This sync in the core's form: one handler-less task of kind ``sync``."""
        k = self.k or len(self.members)
        return [NewTask(
            id=self.id, type=SYNC, kind=SYNC, depends_on=tuple(self.members), quorum=k,
            timeout=self.timeout, ticket_id=self.ticket_id, phase=self.phase, priority=self.priority,
            fingerprint=_fingerprint(SYNC, self.members, k, self.timeout, self.ticket_id, self.phase, int(self.priority)),
        )]


class LoopUntil(BaseModel):
    """When a loop is done: its check's result has ``result[key] == equals``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    equals: Any = None

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str:
        return check_name(value, "until.key")

    @field_validator("equals")
    @classmethod
    def _equals(cls, value: Any) -> Any:
        storable.check_json(value, "until.equals")
        return value


class LoopSpec(_OwnNode):
    """A review loop run by the scheduler: re-run ``body`` until the check says done.

    Args (fields):
        id: the loop's task id; its result is ``{"outcome": "approved" | "rounds_exhausted",
            "rounds": r, "last": <the last check's result>}``.
        check: the task whose result is checked first (round 1); in the submission or stored.
        until: ``{"key": name, "equals": value}``: done when the check's result (a mapping) has
            that value under that key.
        max_rounds: 1..10,000 rounds, round 1 included.
        body: the tasks of each further round (``TaskSpec``s or dicts), in order; they may depend
            only on each other; those depending on none run after the previous check; the last
            one is the round's check. Round ``r``'s copies have ids ``"{id}.r{r}.{body id}"``.
        ticket_id, phase: as a task's (body tasks without a ticket take the loop's).

    Raises ``InvalidCoordinationError`` for a bad field, an empty body, duplicate body ids, a
    body dependency outside the body or a cycle among body tasks (naming it), or round ids that
    would be too long.
    """

    kind: Literal["loop"] = "loop"
    check: str
    until: LoopUntil
    max_rounds: int
    body: list[TaskSpec]

    @field_validator("check", mode="before")
    @classmethod
    def _check(cls, value: Any) -> str:
        return check_name(value, "check")

    @field_validator("max_rounds", mode="before")
    @classmethod
    def _max_rounds(cls, value: Any) -> int:
        return check_int(value, "max_rounds", 1, MAX_ROUNDS)

    @field_validator("body", mode="before")
    @classmethod
    def _body(cls, value: Any) -> list[TaskSpec]:
        items = check_list(value, "body")
        if not items:
            raise ValueError("body must hold at least one task")
        specs = list(iter_task_specs(list(items), payload_max_bytes=_UNBOUNDED))
        ids = [s.id for s in specs]
        for s in specs:
            if ids.count(s.id) > 1:
                raise ValueError(f"body task '{s.id}' appears more than once")
            for dep in s.depends_on:
                if dep not in ids:
                    raise ValueError(f"body task '{s.id}' depends on '{dep}', which is not in the body")
        try:
            graphlib.TopologicalSorter({s.id: s.depends_on for s in specs}).prepare()
        except graphlib.CycleError as exc:
            cycle = " -> ".join(f"'{i}'" for i in reversed(exc.args[1]))
            raise ValueError(f"body tasks form a cycle: {cycle}") from None
        return specs

    def model_post_init(self, _context: Any) -> None:
        """Check that every round's ids are names (``InvalidCoordinationError``)."""
        for spec in self.body:
            longest = round_id(self.id, self.max_rounds, spec.id)
            try:
                check_name(longest, "round id")
            except ValueError:
                raise ValueError(
                    f"round id '{longest[:60]}...' would be over 128 characters; shorten the loop or body ids"
                ) from None
        if self.check == self.id:
            raise ValueError("a loop cannot check itself")

    def to_new_tasks(self) -> list[NewTask]:
        """This loop in the core's form: one handler-less task of kind ``loop``."""
        body = [s.model_dump(mode="json") for s in self.body]
        until = {"key": self.until.key, "equals": self.until.equals}
        return [NewTask(
            id=self.id, type=LOOP, kind=LOOP, depends_on=(self.check,), ticket_id=self.ticket_id,
            phase=self.phase, coordination={"until": until, "max_rounds": self.max_rounds, "body": body},
            fingerprint=_fingerprint(LOOP, self.check, until, self.max_rounds, body, self.ticket_id, self.phase),
        )]


class SplitSpec(_Node):
    """A static split: ``children`` run after ``parent`` completes, declared together.

    Each child becomes a task depending on ``parent`` (and on whatever it declares); the scheduler
    records ``coordination.split.created`` for the parent, naming them. Their ids take the
    SplitSpec's place in the ids ``submit`` returns. Raises ``InvalidCoordinationError`` for a
    bad field or no children.
    """

    kind: Literal["split"] = "split"
    parent: str
    children: list[TaskSpec]

    @field_validator("parent", mode="before")
    @classmethod
    def _parent(cls, value: Any) -> str:
        return check_name(value, "parent")

    @field_validator("children", mode="before")
    @classmethod
    def _children(cls, value: Any) -> list[TaskSpec]:
        items = check_list(value, "children")
        if not items:
            raise ValueError("children must hold at least one task")
        return list(iter_task_specs(list(items), payload_max_bytes=_UNBOUNDED))

    def to_new_tasks(self) -> list[NewTask]:
        """The children in the core's form, each depending on the parent and marked its split."""
        out = []
        for spec in self.children:
            deps = spec.depends_on if self.parent in spec.depends_on else [self.parent, *spec.depends_on]
            new = spec.model_copy(update={"depends_on": deps}).to_new_task()
            new.coordination = {"split_of": self.parent}
            out.append(new)
        return out


SPECS: dict[str, type[_Node]] = {"sync": SyncSpec, "loop": LoopSpec, "split": SplitSpec}


def node_spec(item: Any, index: int) -> _Node | None:
    """The coordination spec ``item`` is (a spec, or a dict with a coordination ``kind``), or
    None for a task. Raises ``InvalidCoordinationError`` for a bad one."""
    if isinstance(item, _Node):
        item = dict(item)
    if isinstance(item, Mapping) and "kind" in item and not isinstance(item["kind"], str):
        raise InvalidCoordinationError(
            f"submission item {index}: kind must be a string (one of task, {', '.join(KINDS)}), "
            f"not {type(item['kind']).__name__}"
        )
    if isinstance(item, Mapping) and item.get("kind") in SPECS:
        fields = {k: v for k, v in item.items()}
        return SPECS[fields["kind"]](**fields)
    if isinstance(item, Mapping) and "kind" in item and item["kind"] != "task":
        raise InvalidCoordinationError(
            f"submission item {index}: kind {item['kind']!r} is not one of task, {', '.join(KINDS)}"
        )
    return None


def parse_submission(items: Any, payload_max_bytes: int) -> list[NewTask]:
    """Validate a submission of tasks and coordination specs into the core's form, in order.

    Args:
        items: a list of ``TaskSpec``/``SyncSpec``/``LoopSpec``/``SplitSpec`` or dicts of their
            fields (a coordination dict has ``"kind"``).
        payload_max_bytes: the largest task payload allowed, in bytes of compact JSON.

    Returns:
        ``NewTask``s, in order (a ``SplitSpec`` contributes its children).

    Raises:
        InvalidSubmissionError: as ``specs.tasks.parse_new_tasks``, or
            ``InvalidCoordinationError`` for a bad coordination spec.
    """
    items = submission_list(items)
    if not any(_maybe_node(i) for i in items):
        return parse_new_tasks(items, payload_max_bytes)
    out: list[NewTask] = []
    for index, item in enumerate(items):
        node = node_spec(item, index)
        if node is None:
            if isinstance(item, Mapping) and item.get("kind") == "task":
                item = {k: v for k, v in item.items() if k != "kind"}
            out.extend(parse_new_tasks([item], payload_max_bytes))
        else:
            nested = node.body if isinstance(node, LoopSpec) else node.children if isinstance(node, SplitSpec) else []
            parse_new_tasks(list(nested), payload_max_bytes)  # their payloads, against the limit
            out.extend(node.to_new_tasks())
    return out


def read_specs(payload_max_bytes: int) -> Any:
    """The parser a ``TaskGraph`` uses for a loop's stored body (``core.coordination.ReadSpecs``)."""

    def read(specs: Sequence[Mapping[str, Any]]) -> list[NewTask]:
        return parse_new_tasks(list(specs), payload_max_bytes)

    return read


def _maybe_node(item: Any) -> bool:
    return isinstance(item, _Node) or (isinstance(item, Mapping) and "kind" in item)


def _describe(name: str, exc: ValidationError, data: Mapping[str, Any]) -> str:
    ident = data.get("id") if name != "SplitSpec" else data.get("parent")
    # repr: an id that is not a name (one ending in a newline, say) is shown escaped: one line
    who = f"{name.removesuffix('Spec').lower()} {ident!r}" if isinstance(ident, str) else name
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(spec)"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(message if not err["loc"] else f"{field}: {message}")
    return f"{who}: " + "; ".join(parts)


__all__ = ["LoopSpec", "LoopUntil", "SplitSpec", "SyncSpec", "node_spec", "parse_submission", "read_specs"]
