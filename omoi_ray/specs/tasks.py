"""What users hand to omoi-ray and what they get back: validated at the edge with pydantic.

Rules:
- Every field a user sets is checked here, with a message that names the task (or agent) and
  the field. Nothing past this module re-checks field types. Values must be storable on every
  store (``omoi_ray.core.storable``): no NUL, control characters or lone surrogates, finite
  numbers within the bounds defined there.
- Ids, types and capabilities are short printable names (letters, digits and ``_ . : @ + -``),
  so they are safe as directory names, log fields and database keys. Patterns are matched with
  ``re.fullmatch`` (``"job\\n"`` is not ``"job"``).
- A field that holds a list takes a list (or tuple or set), never a bare string: ``"gpu"`` is
  refused, not read as ``["g", "p", "u"]`` nor silently wrapped.
- A task's *fingerprint* hashes everything that defines it except its id and idempotency key;
  resubmitting a task with an equal fingerprint is a no-op that returns the stored task.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omoi_ray.core import storable, task_fields
from omoi_ray.core.merge import check_merge
from omoi_ray.core.model import NewTask, Priority, RetryPolicy, Task
from omoi_ray.core.task_fields import Shape
from omoi_ray.errors import (
    InvalidAgentSpecError,
    InvalidArgumentError,
    InvalidMergeError,
    InvalidSubmissionError,
    InvalidTaskSpecError,
    PayloadTooLargeError,
)

NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}"  # matched whole (re.fullmatch)
_NAME = re.compile(NAME_PATTERN)
_CAPABILITY = re.compile(r"[a-z0-9_][a-z0-9_.:+-]{0,63}")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_LIST_TYPES = (list, tuple, set, frozenset)


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a name (``NAME_PATTERN``, matched whole).

    Args:
        value: an id, task type or agent name.
        what: the field, for the message (``"agent name"``, ``"handler task type"``).

    Raises:
        ValueError: not a string of 1-128 allowed characters (a ``ValueError``, so pydantic
            names the field).
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-128 characters of letters, digits and '_ . : @ + -' "
            f"(starting with a letter, digit or '_'), not {value!r}"
        )
    return value


def check_prefix(value: Any, what: str = "prefix") -> str:
    """Return ``value`` if it is a group prefix: a name (``check_name``) without ``"."``, so that
    ``prefix + "."`` starts the ids of one applied pattern only (its items, its loops' rounds),
    never those of another whose prefix extends it.

    Args:
        value: the prefix given (``rt.patterns.apply``, ``group_status``, ``cancel_group``).
        what: the field, for the message.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: not a name, or a name holding ``"."``; callers raise their own typed error.
    """
    check_name(value, what)
    if "." in value:
        raise ValueError(f"{what} must be a name without '.', not {value!r:.80}")
    return value


def check_list(value: Any, what: str) -> Any:
    """``value`` if it is a list, tuple or set; ``ValueError`` naming ``what`` otherwise (a bare
    string is refused with a hint, never split into characters or wrapped)."""
    if isinstance(value, _LIST_TYPES):
        return value
    if isinstance(value, (str, bytes)):
        # ValueError, not TypeError: pydantic turns only ValueError into a message naming the field
        raise ValueError(f"{what} must be a list, not the string {value!r}; write [{value!r}]")  # noqa: TRY004
    raise ValueError(f"{what} must be a list, not {type(value).__name__}")


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) from ``low`` to ``high``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def task_id_list(value: Any, what: str = "task_ids") -> list[str]:
    """A driver call's task ids as a list: any iterable of names except a bare string or a
    mapping. Raises ``InvalidArgumentError`` naming ``what`` (and the position of a bad id)."""
    if isinstance(value, (str, bytes)):
        raise InvalidArgumentError(f"{what} must be a list of task ids, not the string {value!r}; write [{value!r}]")
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{what} must be a list of task ids, not {type(value).__name__}")
    ids = list(value)
    for index, task_id in enumerate(ids):
        if not isinstance(task_id, str) or not _NAME.fullmatch(task_id):
            raise InvalidArgumentError(f"{what}[{index}] is not a task id: {check_task_id_message(task_id)}")
    return ids


def check_task_id(value: Any, what: str = "task_id") -> str:
    """``value`` if it can be a task id; ``InvalidArgumentError`` naming ``what`` otherwise."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgumentError(f"{what} is not a task id: {check_task_id_message(value)}")
    return value


def check_task_id_message(value: Any) -> str:
    """The text saying what a task id must be, quoting ``value`` (for ``InvalidArgumentError``s)."""
    return f"a task id is 1-128 characters of letters, digits and '_ . : @ + -', not {value!r}"


#: the most items a list of capabilities (or tags) may hold as given, repeats included
MAX_LISTED_NAMES = 1024


def normalize_capabilities(values: Sequence[str], what: str) -> list[str]:
    """Return capabilities lower-cased (ASCII only), without duplicates, sorted.

    Args:
        values: a list, tuple or set of capability names (a bare string is refused).
        what: the field, for messages (``"capabilities"``, ``"requires"``).

    Returns:
        ``list[str]`` of 1-64 characters each: lower-case letters, digits and ``_ . : + -``.

    Raises:
        ValueError: not a list, more than ``MAX_LISTED_NAMES`` items, an item that is not a
            string, or a name outside that pattern.
    """
    values = check_list(values, what)
    if len(values) > MAX_LISTED_NAMES:  # before any per-item work: the list may be huge
        raise ValueError(f"{what} holds {len(values)} items, over the limit of {MAX_LISTED_NAMES}")
    out: set[str] = set()
    for raw in values:
        if not isinstance(raw, str):
            raise ValueError(f"{what} must be strings, not {raw!r}")
        cap = raw.lower() if raw.isascii() else raw  # lower-casing stays in ASCII
        if not _CAPABILITY.fullmatch(cap):
            raise ValueError(
                f"capability {raw!r} in {what} must be 1-64 characters of lower-case letters, "
                "digits and '_ . : + -'"
            )
        out.add(cap)
    return sorted(out)


#: the most capabilities (or tags) one agent may declare
MAX_AGENT_NAMES = 256


def agent_names(value: Any, what: str) -> list[str]:
    """An agent's capabilities or tags (``normalize_capabilities``: a list of names, never a
    bare string; None is empty), at most ``MAX_AGENT_NAMES`` of them; ``ValueError`` naming ``what``."""
    if value is None:
        return []
    names = normalize_capabilities(value, what)
    if len(names) > MAX_AGENT_NAMES:
        raise ValueError(f"{what} holds {len(names)} names, over the limit of {MAX_AGENT_NAMES}")
    return names


def json_size(value: Any, what: str) -> int:
    """Bytes of ``value`` as compact JSON; raise ValueError naming ``what`` if it is not JSON."""
    try:
        return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable ({exc})") from None


class TaskSpec(BaseModel):
    """A task as a user submits it.

    ``requires`` lists the capabilities an agent needs to run it; ``depends_on`` lists task ids
    (in the same submission or already stored) that must complete first. ``max_retries`` bounds
    extra attempts of every kind; ``timeout`` (seconds) bounds one attempt's run time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: str
    payload: Any = None
    requires: list[str] = Field(default_factory=list)
    priority: Priority = Priority.MEDIUM
    depends_on: list[str] = Field(default_factory=list)
    timeout: float | None = None
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    idempotency_key: str | None = None
    ticket_id: str | None = None
    phase: str | None = None
    #: resources to hold while the handler runs: "type:id" (exclusive) or (type, id, mode)
    locks: list[Any] = Field(default_factory=list)
    #: a join's merge strategy: a name (``"combine"``) or ``{"strategy": ..., **params}``
    #: (``omoi_ray.core.merge``); the handler reads the merge with ``ctx.merged()``
    merge: Any = None

    def __init__(self, /, **data: Any) -> None:
        """Raises ``InvalidTaskSpecError`` naming the task and every bad field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _spec_error(exc, data.get("id"), None) from None

    # It only translates the error: pydantic may keep validating mappings without calling it
    # (as it does for its own ``RootModel``), which keeps ``model_validate`` at full speed.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("id", "type", mode="before")
    @classmethod
    def _name(cls, value: str, info: Any) -> str:
        return check_name(value, info.field_name)

    @field_validator("ticket_id", "phase", mode="before")
    @classmethod
    def _optional_name(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_name(value, info.field_name)

    @field_validator("idempotency_key", mode="before")
    @classmethod
    def _idempotency_key(cls, value: Any) -> str | None:
        if value is None:
            return None
        storable.check_text(value, "idempotency_key", max_chars=256, allow_newlines=False)
        if not value:
            raise ValueError("idempotency_key must not be empty (None: no key)")
        return value

    @field_validator("requires", mode="before")
    @classmethod
    def _requires(cls, value: Any) -> list[str]:
        return normalize_capabilities([] if value is None else value, "requires")

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: Any) -> list[str]:
        out: list[str] = []
        for dep in check_list([] if value is None else value, "depends_on"):
            check_name(dep, "depends_on entries")
            if dep not in out:
                out.append(dep)
        return out

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Priority:
        return Priority.parse(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else storable.check_seconds(value, "timeout", maximum=storable.MAX_TIMEOUT_S)

    @field_validator("backoff_base", "backoff_cap", mode="before")
    @classmethod
    def _backoff(cls, value: Any, info: Any) -> float:
        return storable.check_seconds(value, info.field_name, maximum=storable.MAX_BACKOFF_S)

    @field_validator("max_retries", mode="before")
    @classmethod
    def _max_retries(cls, value: Any) -> int:
        return check_int(value, "max_retries", 0, storable.MAX_RETRIES)

    @field_validator("locks", mode="before")
    @classmethod
    def _locks(cls, value: Any) -> list[Any]:
        # a list of resources, as the README writes it ("x:y" alone is refused, not wrapped)
        value = check_list([] if value is None else value, "locks")
        if not value:
            return []
        from omoi_ray.errors import InvalidLockRequestError
        from omoi_ray.specs.locks import parse_request

        try:
            spec = parse_request("task", list(value))
        except InvalidLockRequestError as exc:  # its message names the problem
            raise ValueError(str(exc)) from None
        return [[key[0], key[1], mode.value] for key, mode in spec.items]

    @field_validator("merge", mode="before")
    @classmethod
    def _merge(cls, value: Any, info: Any) -> dict[str, Any] | None:
        merge = check_merge(value)
        if merge is not None and "depends_on" in info.data and not info.data["depends_on"]:
            raise ValueError("a join merges the results of the tasks it depends on: give it depends_on")
        return merge

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        storable.check_json(value, "payload")  # its size is checked once, in iter_task_specs
        return value

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> TaskSpec:
        """A copy of this task; the fields in ``update`` are validated as in a new ``TaskSpec``
        (pydantic's own copy would take them unchecked). Raises ``InvalidTaskSpecError``."""
        if not update:
            return super().model_copy(deep=deep)
        fields = {**dict(self), **update}
        return TaskSpec(**(copy.deepcopy(fields) if deep else fields))

    def fingerprint(self) -> str:
        """A hash of everything that defines the task except its id and idempotency key."""
        body = [
            self.type, self.payload, self.requires, int(self.priority), self.depends_on, self.timeout,
            self.max_retries, self.backoff_base, self.backoff_cap, self.ticket_id, self.phase,
            *([self.locks] if self.locks else []),  # absent when empty: older fingerprints stay valid
            *([["merge", self.merge]] if self.merge is not None else []),  # likewise
        ]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_new_task(self) -> NewTask:
        """This task in the core's form (``NewTask``), fingerprint included."""
        return _new_task_from_spec(self, fingerprint=self.fingerprint())


@functools.lru_cache(maxsize=256)
def _retry_policy(max_retries: int, backoff_base: float, backoff_cap: float) -> RetryPolicy:
    """Policies are immutable: tasks with the same one share a single object."""
    return RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_cap=backoff_cap)


def parse_new_tasks(items: Sequence[TaskSpec | Mapping[str, Any]], payload_max_bytes: int) -> list[NewTask]:
    """Validate a submission straight into the core's form (one ``TaskSpec`` alive at a time)."""
    return [spec.to_new_task() for spec in iter_task_specs(items, payload_max_bytes)]


def submission_list(items: Any) -> list[Any]:
    """A submission as a list of items; ``InvalidSubmissionError`` asking for a list when it is a
    single task, a string, a mapping or not iterable at all (nothing is iterated into pieces)."""
    if isinstance(items, list):
        return items
    if isinstance(items, (TaskSpec, Mapping, str, bytes)) or not isinstance(items, Iterable):
        raise InvalidSubmissionError(
            f"submit takes a list of tasks (TaskSpec or dict), not a {type(items).__name__}; "
            "pass a list of tasks, e.g. submit([task])"
        )
    return list(items)


def check_payload(item: Mapping[str, Any], index: int) -> None:
    """Check a mapping item's payload on the driver, before Ray pickles it (a payload nested
    100,000 deep cannot even be sent); the scheduler checks it again."""
    if "payload" in item:
        try:
            storable.check_json(item["payload"], "payload")
        except ValueError as exc:
            raise InvalidTaskSpecError(f"{_who(item.get('id'), index)}: {exc}") from None


def iter_task_specs(items: Sequence[TaskSpec | Mapping[str, Any]], payload_max_bytes: int) -> Any:
    """Validate a submission's items one by one, as ``TaskSpec``s.

    A ``TaskSpec`` item is checked again as its fields (it may have changed since it was built).

    Args:
        items: a list of ``TaskSpec`` or dicts of its fields.
        payload_max_bytes: the largest payload allowed, in bytes of compact JSON.

    Returns:
        An iterator of validated ``TaskSpec``s, in order.

    Raises:
        InvalidSubmissionError: ``items`` is not a list of tasks (see ``submission_list``).
        InvalidTaskSpecError: an item is not a TaskSpec or mapping, or a field is bad (the
            message names the task or item index and the field).
        PayloadTooLargeError: a payload is over ``payload_max_bytes``.
    """
    for index, item in enumerate(submission_list(items)):
        if isinstance(item, TaskSpec):
            # Checked again as its fields: a TaskSpec's lists and payload are mutable after it was
            # built, and ``model_construct`` builds one without any check.
            item = task_spec_fields(item, index)
        if isinstance(item, Mapping):
            try:
                spec = TaskSpec.model_validate(dict(item))
            except ValidationError as exc:
                raise _spec_error(exc, item.get("id"), index) from None
        else:
            raise InvalidTaskSpecError(
                f"submission item {index} must be a TaskSpec or a mapping, not {type(item).__name__}"
            )
        try:
            size = json_size(spec.payload, "payload")
        except ValueError as exc:  # e.g. an int too long to print
            raise InvalidTaskSpecError(f"{_who(spec.id, index)}: {exc}") from None
        if size > payload_max_bytes:
            raise PayloadTooLargeError(
                f"task '{spec.id}': payload is {size} bytes, over the limit of "
                f"{payload_max_bytes} (OMOI_PAYLOAD_MAX_BYTES); pass a reference instead",
                task_id=spec.id,
            )
        yield spec


def task_spec_fields(spec: TaskSpec, index: int) -> dict[str, Any]:
    """A ``TaskSpec``'s fields as a plain dict, to be validated like any mapping; raises
    ``InvalidTaskSpecError`` naming the submission item if they cannot even be read."""
    try:
        return spec.model_dump()
    except Exception as exc:  # noqa: BLE001 - a spec built with model_construct may lack fields
        raise InvalidTaskSpecError(
            f"submission item {index} is a TaskSpec whose fields cannot be read ({type(exc).__name__}); "
            "build it with TaskSpec(...)"
        ) from None


def _who(task_id: Any, index: int | None) -> str:
    if isinstance(task_id, str) and _NAME.fullmatch(task_id):
        return f"task '{task_id}'"
    if isinstance(task_id, str):
        return f"task {task_id!r}"
    return "task spec" if index is None else f"submission item {index}"


def _spec_error(exc: ValidationError, task_id: Any, index: int | None) -> InvalidTaskSpecError:
    """The typed error for a task's bad fields: ``InvalidMergeError`` when ``merge`` is among
    them, ``InvalidTaskSpecError`` otherwise (the message names the task and every field)."""
    merge = any(err["loc"][:1] == ("merge",) for err in exc.errors())
    return (InvalidMergeError if merge else InvalidTaskSpecError)(_describe(exc, task_id, index))


def _describe(exc: ValidationError, task_id: Any, index: int | None) -> str:
    who = _who(task_id, index)
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(task)"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return f"{who}: " + "; ".join(parts)


class TaskInfo(BaseModel):
    """A task's state as the runtime reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    status: str
    priority: str
    attempt: int
    depends_on: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    result: Any = None
    error: str | None = None
    reason: str | None = None
    #: upstream_failed because its root (the task whose end doomed it) was cancelled, not failed
    upstream_cancelled: bool = False
    agent_id: str | None = None
    ticket_id: str | None = None
    phase: str | None = None
    merge: Any = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: "task", or a coordination node run by the scheduler itself ("sync", "loop")
    kind: str = "task"

    @property
    def done(self) -> bool:
        """True once the task is final (a ``TERMINAL`` status: it will not change again)."""
        from omoi_ray.core.tasks import TERMINAL, TaskStatus

        return TaskStatus(self.status) in TERMINAL


#: How a spec's value becomes a ``NewTask``'s, per kind of field (``omoi_ray.core.task_fields``).
SPEC_TO_NEW = dict.fromkeys(task_fields.KINDS, "{v}") | {
    task_fields.CAPS: "frozenset({v})",
    task_fields.IDS: "tuple({v})",
    task_fields.LOCKS: "tuple((t, i, m) for t, i, m in {v})",
}
#: How a core task's value becomes a ``TaskInfo``'s, per kind of field.
TASK_TO_INFO = dict.fromkeys(task_fields.KINDS, "{v}") | {
    task_fields.TIME: "_utc({v})",
    task_fields.STAMP: "_utc({v})",
    task_fields.CAPS: "sorted({v})",
    task_fields.IDS: "list({v})",
    task_fields.PRIORITY: "{v}.name",
    task_fields.STATUS: "{v}.value",
    task_fields.OUTCOME: "({v}.value if {v} else None)",
}
#: How a read row's value (JSON decoded, times as aware datetimes) becomes a ``TaskInfo``'s.
ROW_TO_INFO = dict.fromkeys(task_fields.KINDS, "{v}") | {
    task_fields.CAPS: "({v} or [])",
    task_fields.PRIORITY: "Priority({v}).name",
}


def _utc(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


_new_task_from_spec = task_fields.compile_mapping(
    "new_task_from_spec", Shape.SPEC, Shape.NEW, SPEC_TO_NEW, build="NewTask",
    namespace={"NewTask": NewTask, "_retry_policy": _retry_policy},
    groups={"retry": "_retry_policy"}, params={"fingerprint": None},
)

#: ``info_from_task(task)``: a core ``Task`` as a ``TaskInfo``.
info_from_task: Callable[[Task], TaskInfo] = task_fields.compile_mapping(
    "info_from_task", Shape.TASK, Shape.INFO, TASK_TO_INFO, build="TaskInfo",
    namespace={"TaskInfo": TaskInfo, "_utc": _utc},
)

#: ``info_from_row(row, depends_on=[...])``: a row of the ``tasks`` table as a ``TaskInfo``.
info_from_row: Callable[..., TaskInfo] = task_fields.compile_mapping(
    "info_from_row", Shape.ROW, Shape.INFO, ROW_TO_INFO, build="TaskInfo",
    namespace={"TaskInfo": TaskInfo, "Priority": Priority}, params={"depends_on": None},
)


class AttemptInfo(BaseModel):
    """One attempt of a task as the runtime reports it: the ``attempt`` number (from 1), the
    agent that claimed it, its ``outcome`` (an ``AttemptOutcome`` value, None while it runs)
    and ``error`` text, and its times (UTC; ``started_at`` and ``finished_at`` None until
    then)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    attempt: int
    agent_id: str
    outcome: str | None
    error: str | None
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


#: ``attempt_info_from_row(row)``: a row of the ``task_attempts`` table as an ``AttemptInfo``.
attempt_info_from_row: Callable[..., AttemptInfo] = task_fields.compile_mapping(
    "attempt_info_from_row", Shape.ROW, Shape.INFO, ROW_TO_INFO, build="AttemptInfo",
    namespace={"AttemptInfo": AttemptInfo}, fields=task_fields.ATTEMPT_FIELDS,
)

Handler = Callable[..., Any] | str


class AgentSpec(BaseModel):
    """An agent as a user declares it: a name, its type and phase, what it can do, its tags, and
    how many tasks at once.

    ``type`` is a name (default ``"agent"``), ``phase`` a name or None; ``capabilities`` and
    ``tags`` are lists of at most ``MAX_AGENT_NAMES`` capability-style names (lower-cased,
    deduplicated, sorted). ``handlers`` maps task types to callables or import paths
    (``pkg.module:function``); ``handler`` (optional) runs every task type without an entry of
    its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    type: str = "agent"
    phase: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    capacity: int = 1
    handler: Any = None
    handlers: dict[str, Any] = Field(default_factory=dict)
    num_cpus: float = 0.0
    resources: dict[str, float] = Field(default_factory=dict)
    max_restarts: int = -1

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "agent name")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> str:
        return check_name(value, "agent type")

    @field_validator("phase", mode="before")
    @classmethod
    def _phase(cls, value: Any) -> str | None:
        return None if value is None else check_name(value, "phase")

    @field_validator("capabilities", mode="before")
    @classmethod
    def _caps(cls, value: Any) -> list[str]:
        return agent_names(value, "capabilities")

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str]:
        return agent_names(value, "tags")

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> int:
        return check_int(value, "capacity", 1, storable.MAX_CAPACITY)

    @field_validator("handlers", mode="before")
    @classmethod
    def _handlers(cls, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"handlers must be a mapping of task type to handler, not {type(value).__name__}")  # noqa: TRY004
        return dict(value)

    @field_validator("num_cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> float:
        if value == 0 and not isinstance(value, bool):
            return 0.0
        return _resource_amount(value, "num_cpus", storable.MAX_AGENT_CPUS)

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> dict[str, float]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"resources must be a mapping of resource name to amount, not {type(value).__name__}")  # noqa: TRY004
        out: dict[str, float] = {}
        for name, amount in value.items():
            storable.check_text(name, "resource name", max_chars=128, allow_newlines=False)
            if not name or name.strip() != name:
                raise ValueError(f"resource name {name!r} must be non-empty without surrounding spaces")
            if name in ("CPU", "GPU"):
                raise ValueError(f"use num_cpus (or a custom resource), not {name!r}")
            out[name] = _resource_amount(amount, f"resources[{name!r}]", storable.MAX_AGENT_RESOURCE)
        return out

    @field_validator("max_restarts", mode="before")
    @classmethod
    def _restarts(cls, value: Any) -> int:
        return check_int(value, "max_restarts", -1, storable.MAX_AGENT_RESTARTS)

    @model_validator(mode="after")
    def _has_handler(self) -> AgentSpec:
        for task_type, handler in self.handlers.items():
            check_name(task_type, "handler task type")
            _check_handler(handler, f"handler for '{task_type}'")
        if self.handler is not None:
            _check_handler(self.handler, "handler")
        if self.handler is None and not self.handlers:
            raise ValueError("give a handler (for every task type) or handlers (per task type)")
        return self


def _resource_amount(value: Any, what: str, maximum: float) -> float:
    """A positive, finite, non-boolean amount Ray can reserve (at least ``MIN_RESOURCE_SHARE``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        amount = float(value) if ok else math.nan
    except OverflowError:  # an int past float's range
        amount = math.inf
    if not (math.isfinite(amount) and storable.MIN_RESOURCE_SHARE <= amount <= maximum):
        shown = "an int too large for a float" if ok and amount == math.inf and isinstance(value, int) else repr(value)[:60]
        raise ValueError(
            f"{what} must be a number from {storable.MIN_RESOURCE_SHARE:g} to {maximum:g}, not {shown}"
        )
    return amount


def _check_handler(handler: Any, what: str) -> None:
    if isinstance(handler, str):
        if not _IMPORT_PATH.fullmatch(handler):
            raise ValueError(f"{what} {handler!r} must be an import path 'pkg.module:function'")
    elif not callable(handler):
        raise ValueError(f"{what} must be a callable or an import path, not {handler!r}")


def parse_agent_spec(**fields: Any) -> AgentSpec:
    """Build an ``AgentSpec`` from keyword fields (``name``, ``capabilities``, ``handlers``, ...).

    Returns:
        The validated ``AgentSpec``.

    Raises:
        InvalidAgentSpecError: a bad field, or no handler at all (the message names the agent
            and every bad field).
    """
    try:
        return AgentSpec(**fields)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{field}: {msg}" if field and not msg.startswith(field + ":") else msg)
        name = fields.get("name")
        who = f"agent {name!r}" if isinstance(name, str) else "agent spec"  # repr: one line whatever the name holds
        raise InvalidAgentSpecError(f"{who}: " + "; ".join(parts)) from None
