"""Pattern files: their schema, their parameters, and loading one into a submission.

A pattern file (YAML, read by ``omoi_ray.specs.pattern_yaml``) holds::

    name: majority_vote               # a step-name-like name
    description: ...                  # optional text
    parameters:                       # name -> {type, default?, description?}
      question: {type: string}        # no default: required
      voters: {type: integer, default: 3}
    steps:                            # name -> one step; references between steps by name
      vote:   {split: {count: ${voters}, task: {type: vote, payload: {q: ${question}, n: ${index}}}}}
      votes:  {sync: {members: [vote], k: 2}}
      decide: {after: [votes], join: {merge: {strategy: majority, key: answer}, task: {type: decide}}}

Step kinds (exactly one per step): ``task`` (a task template), ``split`` (``count`` copies, or
one per item of a list ``over``, of a task template whose payload may use ``${index}`` and
``${item}``), ``sync`` (``members``: steps; ``k``; ``timeout`` in seconds), ``join`` (``merge``:
a strategy, see ``omoi_ray.core.merge``; ``task``), ``loop`` (``check``: a task step;
``until: {key, equals}``; ``max_rounds``; ``body``: named task templates, each with an optional
``after`` among the body's names; the last is the next round's check). ``after`` (a list of step
names) is allowed on task, split and join steps.

Rules:
- Parameter types: ``string``, ``integer``, ``number``, ``boolean``, ``list``, ``object``;
  a value given to ``load_pattern`` is checked against its declared type (a bool is not an
  integer), unknown parameters are refused, a parameter without a default is required. The
  names ``index`` and ``item`` are reserved for splits.
- ``${name}`` is substituted into the parsed steps (``core.patterns.substitute``), then the steps
  are validated; every unknown variable is listed in one ``UnknownVariableError``.
- Every error is a ``PatternError`` whose message names the file, and the step and field when
  there is one.
"""

from __future__ import annotations

import math
import re
import uuid
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omoi_ray.core import storable
from omoi_ray.core.merge import check_merge
from omoi_ray.core.patterns import SPLIT_VARIABLES, Expansion, expand, item_count, substitute, variables_in
from omoi_ray.errors import PatternError, PatternNotFoundError, UnknownVariableError
from omoi_ray.specs.pattern_yaml import load_yaml
from omoi_ray.specs.tasks import check_list, check_name, check_prefix

#: a step or parameter name: it becomes part of task ids (``{prefix}.{step}.{i}``)
STEP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
#: a shipped pattern's name (a file ``patterns/<name>.yaml``)
PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: most tasks one split (and one pattern) may expand to
MAX_SPLIT = 10_000
#: most rounds a loop may declare
MAX_ROUNDS = 1000

_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (isinstance(v, int) or math.isfinite(v)),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_NO_DEFAULT = object()


def _step_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not STEP_NAME.fullmatch(value):
        raise ValueError(f"{what} must be 1-64 letters, digits, '_' or '-' (starting with a letter or '_'), not {value!r}")
    return value


def _step_names(value: Any, what: str) -> list[str]:
    names = [_step_name(v, f"{what} entries") for v in check_list(value, what)]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names a step twice")
    return names


class Parameter(BaseModel):
    """A declared parameter: its ``type``, its ``default`` (absent: required), a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "integer", "number", "boolean", "list", "object"]
    default: Any = _NO_DEFAULT
    description: str | None = None

    @model_validator(mode="after")
    def _default_has_type(self) -> Parameter:
        if self.default is not _NO_DEFAULT and not _TYPES[self.type](self.default):
            raise ValueError(f"default {self.default!r} is not a {self.type}")
        return self

    @property
    def required(self) -> bool:
        """True when the parameter has no default."""
        return self.default is _NO_DEFAULT


class TaskTemplate(BaseModel):
    """A task as a step declares it (``TaskSpec`` fields; the id and dependencies come from the
    pattern). Full task checks happen at submission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    payload: Any = None
    requires: list[str] = Field(default_factory=list)
    priority: str | int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    phase: str | None = None
    locks: list[Any] | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> str:
        return check_name(value, "type")

    @field_validator("requires", mode="before")
    @classmethod
    def _requires(cls, value: Any) -> list[str]:
        return list(check_list(value, "requires"))

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else storable.check_seconds(value, "timeout", maximum=storable.MAX_TIMEOUT_S)


class BodyTask(TaskTemplate):
    """A task of a loop's body: a template with ``after`` among the body's task names."""

    after: list[str] = Field(default_factory=list)

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> list[str]:
        return _step_names(value, "after")


class Split(BaseModel):
    """``count`` copies of ``task``, or one per item of the list ``over``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int | None = None
    over: list[Any] | None = None
    task: TaskTemplate

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPLIT:
            raise ValueError(f"count must be an integer from 1 to {MAX_SPLIT}, not {value!r}")
        return value

    @field_validator("over", mode="before")
    @classmethod
    def _over(cls, value: Any) -> list[Any] | None:
        if value is None:
            return None
        value = check_list(value, "over")
        if not 1 <= len(value) <= MAX_SPLIT:
            raise ValueError(f"over must hold 1 to {MAX_SPLIT} items, not {len(value)}")
        return list(value)

    @model_validator(mode="after")
    def _one_of(self) -> Split:
        if (self.count is None) == (self.over is None):
            raise ValueError("give exactly one of count and over")
        return self


class Sync(BaseModel):
    """Wait for ``k`` (default all) of the ``members`` steps' tasks, up to ``timeout`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    members: list[str]
    k: int | None = None
    timeout: float | None = None

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, value: Any) -> list[str]:
        names = _step_names(value, "members")
        if not names:
            raise ValueError("members must name at least one step")
        return names

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"k must be a positive integer, not {value!r}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else storable.check_seconds(value, "timeout", maximum=storable.MAX_TIMEOUT_S)


class Join(BaseModel):
    """A task that receives its ``after`` steps' results merged by ``merge``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    merge: Any
    task: TaskTemplate

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, value: Any) -> dict[str, Any]:
        if value is None:
            raise ValueError("a join needs a merge strategy")
        return check_merge(value, "merge")  # type: ignore[return-value]


class Until(BaseModel):
    """A loop ends when the check task's ``result[key] == equals``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    equals: Any

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> str:
        return storable.check_text(value, "key", max_chars=128, allow_newlines=False)


class Loop(BaseModel):
    """Repeat ``body`` after ``check`` until ``until`` holds, at most ``max_rounds`` rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    until: Until
    max_rounds: int
    body: dict[str, BodyTask]

    @field_validator("check", mode="before")
    @classmethod
    def _check(cls, value: Any) -> str:
        return _step_name(value, "check")

    @field_validator("max_rounds", mode="before")
    @classmethod
    def _rounds(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROUNDS:
            raise ValueError(f"max_rounds must be an integer from 1 to {MAX_ROUNDS}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _body(self) -> Loop:
        if not self.body:
            raise ValueError("body must hold at least one task")
        names = list(self.body)
        for name, task in self.body.items():
            _step_name(name, "body task names")
            for ref in task.after:
                if ref not in self.body:
                    raise ValueError(f"body task '{name}' is after '{ref}', which the body does not declare")
                if names.index(ref) >= names.index(name):
                    raise ValueError(f"body task '{name}' is after '{ref}', declared later (declare in order)")
        return self


_KINDS = ("task", "split", "sync", "join", "loop")


class Step(BaseModel):
    """One step: exactly one of ``task``, ``split``, ``sync``, ``join``, ``loop``, and ``after``
    (task, split and join only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: list[str] = Field(default_factory=list)
    task: TaskTemplate | None = None
    split: Split | None = None
    sync: Sync | None = None
    join: Join | None = None
    loop: Loop | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> list[str]:
        return _step_names(value, "after")

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a step has exactly one of {', '.join(_KINDS)} (this one has {given or 'none'})")
        if self.after and given[0] in ("sync", "loop"):
            raise ValueError(f"a {given[0]} step takes no 'after' (its members or check say what it waits for)")
        if given[0] == "join" and not self.after:
            raise ValueError("a join step needs 'after': the steps whose results it merges")
        return self

    @property
    def kind(self) -> str:
        """The step's kind (``task``, ``split``, ``sync``, ``join`` or ``loop``)."""
        return next(k for k in _KINDS if getattr(self, k) is not None)

    def plain(self) -> dict[str, Any]:
        """The step as ``core.patterns.expand`` takes it."""
        body = getattr(self, self.kind).model_dump(exclude_defaults=True)
        if self.kind == "task":
            body = {"task": body}
        return {"kind": self.kind, "after": list(self.after), **body}


class PatternHead(BaseModel):
    """A pattern file's top level; ``steps`` are validated after substitution (``Step``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str | None = None
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    steps: dict[str, Any]

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _step_name(value, "name")

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        for name in value or {}:
            _step_name(name, "parameter names")
            if name in SPLIT_VARIABLES:
                raise ValueError(f"parameter name '{name}' is reserved for splits")
        return value or {}

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("steps must be a mapping of step name to step, with at least one step")
        for name in value:
            _step_name(name, "step names")
        return value


def _errors(exc: ValidationError, source: str, step: str | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = f"step '{step}': " if step else ""
        if not step and len(loc) >= 2 and loc[0] == "steps":
            where, loc = f"step '{loc[1]}': ", loc[2:]
        field = ".".join(p for p in loc if not p.startswith("function-")) or "(step)"
        parts.append(f"{where}{field}: {err['msg'].removeprefix('Value error, ')}")
    return f"pattern {source}: " + "; ".join(parts)


def find_pattern(name_or_path: str | Path) -> tuple[bytes, str]:
    """The bytes of a shipped pattern (by name) or a file (by path), and how to name it.

    Raises:
        PatternNotFoundError: no shipped pattern of that name and no such file.
    """
    if isinstance(name_or_path, str) and PATTERN_NAME.fullmatch(name_or_path):
        shipped = resources.files("omoi_ray.patterns").joinpath(f"{name_or_path}.yaml")
        if shipped.is_file():
            return shipped.read_bytes(), f"'{name_or_path}'"
    path = Path(name_or_path)
    if not path.is_file():
        raise PatternNotFoundError(
            f"pattern {str(name_or_path)!r}: no shipped pattern of that name ({', '.join(shipped_patterns())}) "
            "and no such file"
        )
    with path.open("rb") as fh:
        data = fh.read(1 << 20)  # the loader's size cap refuses what is over it
    return data, f"'{path}'"


def shipped_patterns() -> list[str]:
    """The names of the shipped patterns, sorted."""
    folder = resources.files("omoi_ray.patterns")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_parameters(head: PatternHead, given: Any, source: str) -> dict[str, Any]:
    """The parameters' values: ``given`` checked against the declarations, defaults filled.

    Raises:
        PatternError: ``given`` is not a mapping, names an undeclared parameter, has a value of
            the wrong type or not storable, or a required parameter is missing (each named).
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise PatternError(f"pattern {source}: params must be a mapping of parameter name to value")
    unknown = sorted(set(given) - set(head.parameters))
    if unknown:
        raise PatternError(
            f"pattern {source}: unknown parameter(s) {', '.join(map(repr, unknown))} "
            f"(declared: {', '.join(head.parameters) or 'none'})"
        )
    values: dict[str, Any] = {}
    missing = []
    for name, decl in head.parameters.items():
        if name in given:
            value = given[name]
            if not _TYPES[decl.type](value):
                raise PatternError(f"pattern {source}: parameter '{name}' must be {_article(decl.type)} {decl.type}, not {value!r}")
            try:
                storable.check_json(value, f"parameter '{name}'")
            except ValueError as exc:
                raise PatternError(f"pattern {source}: {exc}") from None
            values[name] = value
        elif decl.required:
            missing.append(name)
        else:
            values[name] = decl.default
    if missing:
        raise PatternError(f"pattern {source}: required parameter(s) {', '.join(map(repr, missing))} not given")
    return values


def _split_payload(raw: Any) -> tuple[Any, Any]:
    """``raw`` without its split's task payload, and that payload (None when there is none)."""
    split = raw.get("split") if isinstance(raw, dict) else None
    task = split.get("task") if isinstance(split, dict) else None
    if not isinstance(task, dict) or "payload" not in task:
        return raw, None
    rest = {**raw, "split": {**split, "task": {k: v for k, v in task.items() if k != "payload"}}}
    return rest, task["payload"]


def _substitute_steps(steps: dict[str, Any], values: dict[str, Any], source: str) -> dict[str, Any]:
    """The steps with the parameters substituted, but for a split's task payload (substituted
    per child by ``expand``, in one pass: a value is never scanned again); ``UnknownVariableError``
    listing every unknown name, by step."""
    missing: dict[str, list[str]] = {}
    for name, raw in steps.items():
        rest, payload = _split_payload(raw)
        unknown = (variables_in(rest) - set(values)) | (variables_in(payload) - set(values) - set(SPLIT_VARIABLES))
        if unknown:
            missing[name] = sorted(unknown)
    if missing:
        names = sorted({v for used in missing.values() for v in used})
        where = "; ".join(f"step '{s}' uses {', '.join(v)}" for s, v in missing.items())
        raise UnknownVariableError(f"pattern {source}: unknown variable(s) {', '.join(names)} ({where})", missing=names)
    out = {}
    for name, raw in steps.items():
        rest, payload = _split_payload(raw)
        out[name] = substitute(rest, values)
        if payload is not None:  # substituted per child, in one pass (``core.patterns.expand``)
            out[name]["split"]["task"]["payload"] = payload
    return out


def load_pattern(
    name_or_path: str | Path, params: Any = None, *, prefix: str | None = None, ticket: str | None = None,
) -> tuple[PatternHead, Expansion]:
    """Read, check and expand a pattern.

    Args:
        name_or_path: a shipped pattern's name (``"majority_vote"``) or a file's path.
        params: parameter name -> value (checked against the declared types).
        prefix: the expanded ids' prefix (a task id); None: ``"{pattern name}-{8 hex digits}"``.
        ticket: the ticket id every item carries, or None.

    Returns:
        The file's validated top level, and the ``Expansion`` (submission items and ids by step).

    Raises:
        PatternNotFoundError: no such pattern.
        PatternError: anything the loader, the schema or ``resolve_parameters`` refuses, a bad
            prefix or ticket (the message names the file, and the step and field).
        UnknownVariableError, UnknownStepError, PatternCycleError: as their names say.
    """
    data, source = find_pattern(name_or_path)
    return parse_pattern(data, source, params, prefix=prefix, ticket=ticket)


def parse_pattern(
    data: bytes | str, source: str, params: Any = None, *, prefix: str | None = None, ticket: str | None = None,
) -> tuple[PatternHead, Expansion]:
    """``load_pattern`` on a file's contents (``source`` names it in messages)."""
    try:
        if prefix is not None:
            check_prefix(prefix)
        if ticket is not None:
            check_name(ticket, "ticket")
    except ValueError as exc:
        raise PatternError(f"pattern {source}: {exc}") from None
    raw = load_yaml(data, source)
    try:
        head = PatternHead.model_validate(raw)
    except ValidationError as exc:
        raise PatternError(_errors(exc, source)) from None
    if prefix is None:
        prefix = f"{head.name}-{uuid.uuid4().hex[:8]}"
    values = resolve_parameters(head, params, source)
    steps = _substitute_steps(head.steps, values, source)
    plain: dict[str, dict[str, Any]] = {}
    for name, raw_step in steps.items():
        try:
            plain[name] = Step.model_validate(raw_step).plain()
        except ValidationError as exc:
            raise PatternError(_errors(exc, source, name)) from None
    total = item_count(plain)  # before expanding: a refusal costs nothing
    if total > MAX_SPLIT:
        raise PatternError(f"pattern {source}: expands to {total} items, over the limit of {MAX_SPLIT}")
    expansion = expand(plain, prefix, ticket=ticket, variables=values, source=f"pattern {source}")
    return head, expansion


def _article(word: str) -> str:
    """``"an"`` before a vowel sound (``an integer``, ``an object``), else ``"a"``."""
    return "an" if word[:1].lower() in "aeiou" else "a"
