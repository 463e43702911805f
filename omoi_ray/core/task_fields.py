"""The task's fields, declared once: which shapes carry each one, and how its value converts.

A task takes seven shapes on its way through omoi-ray: the user's ``TaskSpec`` (``SPEC``), the
core's ``NewTask`` (``NEW``) and ``Task`` (every field), the ``tasks`` row (``ROW``; ``UPDATE``
marks the columns a change rewrites), the reported ``TaskInfo`` (``INFO``), the ``Assignment``
sent to an agent (``WIRE``) and the handler's ``TaskView`` (``VIEW``). ``FIELDS`` below says,
per field, which of them carry it and its *kind*; every mapping between two shapes is generated
from it (``compile_mapping``) by the layer that owns the target shape, which supplies one
expression per kind (its conversion, e.g. a time's float to the row's form).

Rules:
- Adding a field: one line in ``FIELDS``, the field in each shape class that carries it, and
  the column in the schema and a migration. No mapping is written by hand;
  ``tests/test_task_fields.py`` fails, naming the field and the shape, when a shape class and
  ``FIELDS`` disagree (``shape_mismatches``).
- ``Task`` carries every field. A dotted ``core`` path puts a field inside a composite of the
  core shapes (``retry.max_retries`` lives in the task's ``RetryPolicy``); the flat shapes
  (spec, row) carry it under its own name.
- A target field that the source shape does not carry is a keyword argument of the generated
  function (``params``) or, if not named there, left to the target's default.
- Mappings are compiled once, at import: a generated function is a single call or dict literal,
  as fast as the hand-written mapping it replaces (the row mapping is on the hot path).
- Attempts are declared the same way (``ATTEMPT_FIELDS``), with the same shape names.
- Pure: no ray, sqlalchemy, redis or pydantic; kinds are names, conversions belong to layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntFlag
from typing import Any

from omoi_ray.core.model import Task


class Shape(IntFlag):
    """The shapes a task takes; a field declares the ones that carry it (``TASK`` carries all).

    An attempt's fields (``ATTEMPT_FIELDS``) use the same names: ``TASK`` for the core
    ``Attempt``, ``ROW``/``UPDATE`` for the ``task_attempts`` table, ``INFO`` for ``AttemptInfo``.
    """

    SPEC = 1  # omoi_ray.specs.tasks.TaskSpec: what a user submits
    NEW = 2  # omoi_ray.core.model.NewTask: a validated submission
    ROW = 4  # the ``tasks`` table (omoi_ray.store.schema.TaskRow), written and read back
    UPDATE = 8  # the columns a task's change rewrites (the rest are written once)
    INFO = 16  # omoi_ray.specs.tasks.TaskInfo: what the runtime reports
    WIRE = 32  # omoi_ray.protocol.Assignment: one attempt handed to an agent
    VIEW = 64  # omoi_ray.handler.context.TaskView: the task as its handler sees it
    TASK = 128  # omoi_ray.core.model.Task: the scheduler's task, which carries every field


#: Shapes that hold composites (``retry``) as objects; the others carry their parts flat.
CORE_SHAPES = Shape.NEW | Shape.TASK
#: Shapes read by key (``row["x"]``) rather than by attribute.
MAPPING_SHAPES = Shape.ROW

# Kinds: how a value looks in each shape (each layer's templates give the conversions).
PLAIN = "plain"  # str, int, float or None: the same value everywhere
JSON = "json"  # any JSON value (payload, result)
TIME = "time"  # core: float seconds since the epoch or None; row/info: a UTC datetime
STAMP = "stamp"  # as TIME, but always set (a missing one reads back as 0.0)
CAPS = "caps"  # core: frozenset of capabilities; spec, row, info: a sorted list
IDS = "ids"  # core, wire, view: a tuple of task ids; spec, info: a list
PRIORITY = "priority"  # core: Priority; row: its int; info, wire, view: its name
STATUS = "status"  # core: TaskStatus; row, info: its value
LOCKS = "locks"  # core, wire: tuple of (type, id, mode); spec: lists; row: JSON list or NULL
OUTCOME = "outcome"  # core: AttemptOutcome or None; row, info: its value or None
KINDS = (PLAIN, JSON, TIME, STAMP, CAPS, IDS, PRIORITY, STATUS, LOCKS, OUTCOME)

S, N, R, U, I, W, V = Shape.SPEC, Shape.NEW, Shape.ROW, Shape.UPDATE, Shape.INFO, Shape.WIRE, Shape.VIEW
NONE = Shape(0)  # carried by the core Task alone
TASK = Shape.TASK


@dataclass(frozen=True, slots=True)
class TaskField:
    """One field of the task.

    ``name`` is its name in the spec, info and view shapes; ``core`` its attribute path in the
    core shapes (default ``name``; dotted inside a composite); ``row`` its column (default
    ``name``); ``wire`` its name in an ``Assignment`` (default ``name``).
    """

    name: str
    kind: str
    shapes: Shape
    core: str = ""
    row: str = ""
    wire: str = ""

    def name_in(self, shape: Shape) -> str:
        """The field's name in ``shape`` (a dotted path for a composite's part in core shapes)."""
        if shape & CORE_SHAPES:
            return self.core or self.name
        if shape & (Shape.ROW | Shape.UPDATE):
            return self.row or self.name
        if shape & Shape.WIRE:
            return self.wire or self.name
        return self.name

    def top_in(self, shape: Shape) -> str:
        """The attribute of ``shape`` that holds the field (a composite's name for its parts)."""
        return self.name_in(shape).split(".", 1)[0]


F = TaskField
#: Every field of a task, in the order of ``Task``.
FIELDS: tuple[TaskField, ...] = (
    F("id", PLAIN, S | N | R | I | W | V, wire="task_id"),
    F("seq", PLAIN, R),
    F("type", PLAIN, S | N | R | I | W | V),
    F("payload", JSON, S | N | R | W | V),
    F("requires", CAPS, S | N | R | I),
    F("priority", PRIORITY, S | N | R | I | W | V),
    F("depends_on", IDS, S | N | I | W | V),  # rows: the task_dependencies table
    F("max_retries", PLAIN, S | N | R, core="retry.max_retries"),
    F("backoff_base", PLAIN, S | N | R, core="retry.backoff_base"),
    F("backoff_cap", PLAIN, S | N | R, core="retry.backoff_cap"),
    F("backoff_jitter", PLAIN, N | R, core="retry.jitter"),
    F("timeout", PLAIN, S | N | R | W, row="timeout_s"),
    F("ticket_id", PLAIN, S | N | R | I | W | V),
    F("phase", PLAIN, S | N | R | I | W | V),
    F("idempotency_key", PLAIN, S | N | R),
    F("fingerprint", PLAIN, N | R),  # computed from the spec (TaskSpec.fingerprint)
    F("created_at", STAMP, R | I),
    F("locks", LOCKS, S | N | R | W),
    F("kind", PLAIN, N | R | I),  # "task", or a coordination node's kind ("sync", "loop")
    F("quorum", PLAIN, N | R),  # a sync's k
    F("coordination", JSON, N | R | U),  # a node's state (core.coordination)
    F("merge", JSON, S | N | R | I),  # a join's merge strategy (``core.merge.check_merge``) or None
    F("status", STATUS, R | U | I),
    F("attempt", PLAIN, R | U | I | W | V),
    F("waiting_on", PLAIN, NONE),  # rebuilt from the dependencies on restore
    F("not_before", TIME, R | U),
    F("agent_id", PLAIN, R | U | I),
    F("agent_incarnation", PLAIN, R | U),
    F("claim_request_id", PLAIN, R | U),
    F("deadline", TIME, R | U),
    F("result", JSON, R | U | I),
    F("error", PLAIN, R | U | I),
    F("reason", PLAIN, R | U | I),
    F("upstream", PLAIN, R | U),
    F("upstream_cancelled", PLAIN, R | U | I),  # a cancel, never a block, for its ticket (core.tickets)
    F("uncharged", PLAIN, NONE),  # counted from the attempts on restore
    F("started_at", TIME, R | U | I),
    F("finished_at", TIME, R | U | I),
    F("updated_at", STAMP, R | U),
)

#: Every field of an attempt, in the order of ``Attempt``, with the same shapes: ``TASK`` is the
#: core ``Attempt``, ``ROW`` the ``task_attempts`` table, ``INFO`` an ``AttemptInfo``.
ATTEMPT_FIELDS: tuple[TaskField, ...] = (
    F("task_id", PLAIN, R | I),
    F("attempt", PLAIN, R | I),
    F("agent_id", PLAIN, R | I),
    F("agent_incarnation", PLAIN, R),
    F("claimed_at", STAMP, R | I),
    F("started_at", TIME, R | U | I),
    F("finished_at", TIME, R | U | I),
    F("outcome", OUTCOME, R | U | I),
    F("error", PLAIN, R | U | I),
    F("released_at", TIME, R | U),
    F("locks", LOCKS, NONE),  # the task's declared locks, read from its row on restore
)
del F, S, N, R, U, I, W, V  # the table's shorthands


def carried_by(shape: Shape, fields: Iterable[TaskField] = FIELDS) -> tuple[TaskField, ...]:
    """The fields ``shape`` carries, in declaration order (every field for ``TASK``)."""
    return tuple(f for f in fields if carries(f, shape))


def carries(field: TaskField, shape: Shape) -> bool:
    """Whether ``shape`` carries ``field`` (``TASK`` carries them all)."""
    return shape is TASK or bool(field.shapes & shape)


def names_in(shape: Shape, fields: Iterable[TaskField] = FIELDS) -> list[str]:
    """The attribute (or column) names ``shape`` has, once each, in declaration order."""
    return list(dict.fromkeys(f.top_in(shape) for f in carried_by(shape, fields)))


def shape_mismatches(shape: Shape, actual: Iterable[str], fields: Iterable[TaskField] = FIELDS) -> list[str]:
    """How a shape class's field names ``actual`` differ from the declaration, one line per
    field (empty when they agree)."""
    declared, present = set(names_in(shape, fields)), set(actual)
    label = shape.name
    return [f"{label} lacks the declared field {n!r}" for n in sorted(declared - present)] + [
        f"{label} has {n!r}, which FIELDS does not declare for it" for n in sorted(present - declared)
    ]


def compile_mapping(
    name: str,
    source: Shape,
    target: Shape,
    templates: Mapping[str, str],
    *,
    build: str | None = None,
    namespace: Mapping[str, Any] | None = None,
    params: Mapping[str, str | None] | None = None,
    groups: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    fields: Iterable[TaskField] = FIELDS,
) -> Callable[..., Any]:
    """Generate the function ``name(s, **params)`` that maps shape ``source`` to ``target``.

    Args:
        name: the generated function's name (shown in tracebacks).
        source: the shape of the argument ``s`` (read by key for ``ROW``, else by attribute).
        target: the shape built; its fields are those ``target`` carries.
        templates: per kind, the expression converting a source value, with ``{v}`` standing
            for the value's expression (e.g. ``"ts({v})"``).
        build: the name in ``namespace`` of the target's constructor, called with keyword
            arguments; ``None`` builds a dict.
        namespace: the names the expressions use.
        params: extra keyword parameters of the function, as name -> default expression
            (``None``: required). A target field the source lacks takes the parameter of its
            name; without one it is left to the target's default.
        groups: per composite (``"retry"``), the constructor name in ``namespace`` that
            builds it from its parts, when a flat source maps to a core target.
        extra: more items of the result, as key -> expression.
        fields: the declaration (``FIELDS``; tests pass a variant).

    Returns:
        The generated function.

    Raises:
        KeyError: a field's kind has no template (a layer forgot a conversion).
    """
    params = dict(params or {})
    items: dict[str, str] = {}
    parts: dict[str, list[tuple[str, str]]] = {}
    flat_to_core = bool(target & CORE_SHAPES) and not source & CORE_SHAPES
    for f in carried_by(target, fields):
        key = f.top_in(target)
        if not carries(f, source):
            if key in params and key not in items:
                items[key] = key
            continue
        path = f.name_in(source)
        if source & MAPPING_SHAPES:
            value = f"s[{path!r}]"
        else:
            value = f"s.{path}"
        if "." in f.name_in(target) and flat_to_core:
            group, part = f.name_in(target).split(".", 1)
            parts.setdefault(group, []).append((part, templates[f.kind].format(v=value)))
            items.setdefault(group, "")
        elif "." in f.name_in(target):
            items[key] = f"s.{key}"  # core to core: the composite itself
        else:
            items[key] = templates[f.kind].format(v=value)
    for group, members in parts.items():
        args = ", ".join(f"{p}={e}" for p, e in members)
        items[group] = f"{(groups or {})[group]}({args})"
    items.update(extra or {})
    signature = ", ".join(["s", *(["*"] if params else []),
                           *(p if d is None else f"{p}={d}" for p, d in params.items())])
    if build is None:
        body = "{" + ", ".join(f"{k!r}: {e}" for k, e in items.items()) + "}"
    else:
        body = f"{build}(" + ", ".join(f"{k}={e}" for k, e in items.items()) + ")"
    source_code = f"def {name}({signature}):\n    return {body}\n"
    scope: dict[str, Any] = dict(namespace or {})
    exec(compile(source_code, f"<task_fields {name}>", "exec"), scope)  # noqa: S102 - our own text
    fn = scope[name]
    fn.__doc__ = f"Generated from FIELDS: {source.name} -> {target.name}.\n\n{source_code}"
    return fn


#: Core to core: values keep their form (``NewTask`` -> ``Task``).
SAME = dict.fromkeys(KINDS, "{v}")

#: ``NewTask`` -> ``Task`` at submission: ``task_from_new(new, seq=, created_at=, updated_at=)``.
task_from_new = compile_mapping(
    "task_from_new", Shape.NEW, TASK, SAME, build="Task", namespace={"Task": Task},
    params={"seq": None, "created_at": None, "updated_at": None},
)
