"""Pattern expansion: a validated pattern's steps become the items of one submission.

Input is plain data (``omoi_ray.specs.patterns`` validates the file and hands over dicts):
``steps`` maps a step name to ``{"kind": "task" | "split" | "sync" | "join" | "loop", "after":
[step names], ...}``. Output is a list of submission items: task dicts (``TaskSpec`` fields),
``{"kind": "sync", ...}`` and ``{"kind": "loop", ...}`` dicts, in an order where every item comes
after the steps it refers to.

Rules:
- Ids: a step's item is ``"{prefix}.{step}"``; a split's children are ``"{prefix}.{step}.{i}"``
  (``i`` from 0). A reference to a split step means all its children, in order.
- ``${name}`` substitution works on parsed values, never on text (``substitute``): a string that
  is exactly ``${name}`` becomes the variable's value with its type; ``${name}`` inside a longer
  string is replaced by the value's text (a string as itself, anything else as compact JSON).
  ``$${`` writes a literal ``${``. Names are ``[A-Za-z_][A-Za-z0-9_]*``.
- A split's task payload may use ``${index}`` (the child's number, from 0) and, for a split
  ``over`` a list, ``${item}`` (the child's list item); the payload is substituted per child
  here, parameters included, in one pass (a substituted value is never scanned again).
- A reference to an undeclared step is an ``UnknownStepError`` naming the step and the
  reference; steps that depend on each other in a cycle are a ``PatternCycleError`` naming it.
- Pure: no ray, sqlalchemy, redis, pydantic or yaml.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from omoi_ray.errors import PatternCycleError, PatternError, UnknownStepError

_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: the variables a split's task payload sees for each child
SPLIT_VARIABLES = ("index", "item")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def variables_in(value: Any) -> set[str]:
    """Every ``${name}`` used in the strings of ``value`` (dict values, list items; keys are
    not substituted), escaped ``$${name}`` excepted."""
    return {m.group(2) for text in _strings(value) for m in _VAR.finditer(text) if not m.group(1)}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def substitute(value: Any, variables: Mapping[str, Any]) -> Any:
    """``value`` with every ``${name}`` replaced from ``variables`` (a new value; the input is
    not changed).

    Args:
        value: parsed data: dicts, lists, strings and scalars.
        variables: name -> value.

    Returns:
        The substituted value: a whole-string ``${name}`` takes the variable's type.

    Raises:
        KeyError: a name not in ``variables`` (callers check ``variables_in`` first, to name
            every missing one at once).
    """
    if isinstance(value, str):
        whole = _WHOLE.fullmatch(value)
        if whole:
            return variables[whole.group(1)]

        def one(m: re.Match[str]) -> str:
            if m.group(1):
                return "${" + m.group(2) + "}"
            return _text(variables[m.group(2)])

        return _VAR.sub(one, value)
    if isinstance(value, Mapping):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


@dataclass(frozen=True)
class Expansion:
    """A pattern's submission: ``items`` in dependency order, the ids of each step's items
    (``ids[step]``: one id, or a split's children in order), the ``prefix`` used, and the
    ``finals``: the steps no other step refers to, in declaration order (their outcome is the
    pattern's)."""

    items: list[dict[str, Any]]
    ids: dict[str, list[str]] = field(default_factory=dict)
    prefix: str = ""
    finals: tuple[str, ...] = ()


def references(step: Mapping[str, Any]) -> list[str]:
    """The step names a step refers to: its ``after``, a sync's ``members``, a loop's ``check``."""
    refs = list(step.get("after", ()))
    if step["kind"] == "sync":
        refs += step["members"]
    if step["kind"] == "loop":
        refs.append(step["check"])
    return refs


def order(steps: Mapping[str, Mapping[str, Any]], source: str = "pattern") -> list[str]:
    """The step names in an order where each comes after the steps it refers to (declaration
    order among independent steps).

    Raises:
        UnknownStepError: a reference to an undeclared step (naming the step and the reference).
        PatternCycleError: the steps refer to each other in a cycle (``cycle`` lists it, its
            first step repeated at the end).
    """
    for name, step in steps.items():
        for ref in references(step):
            if ref not in steps:
                raise UnknownStepError(
                    f"{source}: step '{name}' refers to step '{ref}', which the pattern does not declare",
                    step=name, reference=ref,
                )
    done: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    for root in steps:  # depth first with an explicit stack: linear, no recursion limit
        if state.get(root):
            continue
        state[root] = 1
        path = [root]
        stack = [iter(references(steps[root]))]
        while stack:
            ref = next(stack[-1], None)
            if ref is None:
                stack.pop()
                name = path.pop()
                state[name] = 2
                done.append(name)
            elif state.get(ref) == 1:
                cycle = path[path.index(ref):] + [ref]
                raise PatternCycleError(f"{source}: steps form a cycle: {' -> '.join(cycle)}", cycle=cycle)
            elif not state.get(ref):
                state[ref] = 1
                path.append(ref)
                stack.append(iter(references(steps[ref])))
    return done


def item_count(steps: Mapping[str, Mapping[str, Any]]) -> int:
    """How many submission items ``expand`` makes of ``steps`` (a split's ``count`` or ``len(over)``,
    one for any other step), computed without expanding."""
    return sum(
        (len(step["over"]) if step.get("over") is not None else step["count"]) if step["kind"] == "split" else 1
        for step in steps.values()
    )


def _task(template: Mapping[str, Any], task_id: str, depends_on: list[str], ticket: str | None) -> dict[str, Any]:
    item = {k: v for k, v in template.items() if v is not None and k != "after"}
    item["id"] = task_id
    item["depends_on"] = depends_on
    if ticket is not None:
        item["ticket_id"] = ticket
    return item


def expand(
    steps: Mapping[str, Mapping[str, Any]],
    prefix: str,
    *,
    ticket: str | None = None,
    variables: Mapping[str, Any] | None = None,
    source: str = "pattern",
) -> Expansion:
    """Expand validated steps into one submission.

    Args:
        steps: step name -> step (``kind`` and its fields, every ``${...}`` already substituted
            but in a split's task payload), in declaration order.
        prefix: the ids' prefix (a task id itself).
        ticket: the ticket id every item carries, or None.
        variables: the pattern's parameters, substituted into split payloads with ``index``
            and ``item`` (every name was checked to exist).
        source: the pattern's file or name, for messages.

    Returns:
        An ``Expansion``.

    Raises:
        UnknownStepError, PatternCycleError: as ``order``.
        PatternError: a loop's ``check`` is a split or sync (it must be one task); a sync's ``k``
            is more than its member tasks (a split member counts its children).
    """
    ids: dict[str, list[str]] = {}
    items: list[dict[str, Any]] = []
    for name in order(steps, source):
        step = steps[name]
        kind, sid = step["kind"], f"{prefix}.{name}"
        after = [i for ref in step.get("after", ()) for i in ids[ref]]
        if kind in ("task", "join"):
            item = _task(step["task"], sid, after, ticket)
            if kind == "join":
                item["merge"] = step["merge"]
            items.append(item)
            ids[name] = [sid]
        elif kind == "split":
            children = []
            over = step.get("over")
            count = len(over) if over is not None else step["count"]
            for i in range(count):
                values = {**(variables or {}), "index": i, **({"item": over[i]} if over is not None else {})}
                template = dict(step["task"])
                template["payload"] = substitute(template.get("payload"), values)
                child = _task(template, f"{sid}.{i}", after, ticket)
                items.append(child)
                children.append(child["id"])
            ids[name] = children
        elif kind == "sync":
            members = [i for ref in step["members"] for i in ids[ref]]
            if step.get("k") is not None and step["k"] > len(members):
                raise PatternError(
                    f"{source}: step '{name}': sync.k is {step['k']}, more than its {len(members)} member tasks",
                    step=name,
                )
            item = {"kind": "sync", "id": sid, "members": members, "k": step.get("k"), "timeout": step.get("timeout")}
            items.append(item | ({"ticket_id": ticket} if ticket is not None else {}))
            ids[name] = [sid]
        elif kind == "loop":
            check = step["check"]
            if steps[check]["kind"] not in ("task", "join"):
                raise PatternError(
                    f"{source}: step '{name}': loop.check must name a task step, not the {steps[check]['kind']} '{check}'",
                    step=name,
                )
            body = [
                _task(t, body_name, list(t.get("after", ())), ticket) for body_name, t in step["body"].items()
            ]
            item = {
                "kind": "loop", "id": sid, "check": ids[check][0], "until": dict(step["until"]),
                "max_rounds": step["max_rounds"], "body": body,
            }
            items.append(item | ({"ticket_id": ticket} if ticket is not None else {}))
            ids[name] = [sid]
        else:  # the schema admits no other kind
            raise PatternError(f"{source}: step '{name}': unknown kind {kind!r}", step=name)
    referred = {ref for step in steps.values() for ref in references(step)}
    finals = tuple(name for name in steps if name not in referred)
    return Expansion(items, ids, prefix, finals)
