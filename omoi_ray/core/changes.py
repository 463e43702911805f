"""The change-log contract every durable writer shares.

A durable writer (the scheduler, the lock manager, and whatever writer comes next) keeps its
state in memory as a core object and records every change it makes in a change log. Its actor
drains the log (``take_changes``), hands the change set to the one group commit, and acts on the
decisions only once they are committed.

Rules:
- A change set is a plain dataclass whose fields each declare how two change sets merge (see
  ``APPEND``, ``UNION`` and ``latest``): ``merge`` is generic, written once here.
- ``bool(change_set)`` is "there are rows to write"; ``worth_flushing()`` adds "there is someone
  to tell once it is written" (fields listed in ``NOTIFY``).
- Merging change sets in commit order gives one change set equivalent to applying them in order:
  appended fields keep their order, ``latest`` fields keep the last state of each key, ``UNION``
  fields are sets.
- The recording side is generic too: a ``ChangeRecorder`` keeps one accumulator per field of its
  change set, following the same declared rule (``add`` appends, unites, or replaces the entry of
  the same key), and ``take`` drains them into one change set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

#: merge rule: lists are concatenated in order
APPEND = "append"
#: merge rule: sets are united
UNION = "union"


@dataclasses.dataclass(frozen=True)
class Latest:
    """Merge rule: one entry per key, the last one wins (``key`` maps an entry to its key)."""

    key: Callable[[Any], Any]


def latest(key: Callable[[Any], Any]) -> Latest:
    """The merge rule of a field holding the latest state of objects keyed by ``key(entry)``."""
    return Latest(key)


def merge_rule(rule: str | Latest) -> dict[str, Any]:
    """Field metadata for a change-set dataclass: ``field(default_factory=list, metadata=merge_rule(APPEND))``."""
    return {"merge": rule}


C = TypeVar("C", bound="ChangeSet")


class ChangeSet:
    """Base of a change set: generic ``merge``, ``__bool__`` and ``worth_flushing``.

    Subclasses are dataclasses whose fields carry ``metadata=merge_rule(...)`` and list the
    fields that only name someone to tell (not rows to write) in ``NOTIFY``.
    """

    __slots__ = ()

    NOTIFY: ClassVar[tuple[str, ...]] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.NOTIFY)  # type: ignore[arg-type]

    def worth_flushing(self) -> bool:
        """Anything to write, or anyone to tell once it is written."""
        return bool(self) or any(getattr(self, name) for name in self.NOTIFY)

    @classmethod
    def merge(cls, batches: Sequence[Self]) -> Self:
        """One change set equivalent to applying ``batches`` in order.

        Args:
            batches: change sets of this class, in commit order (at least one).

        Returns:
            A new change set (a single batch is returned as it is): each field merged by the rule
            its metadata declares (``APPEND`` when it declares none).
        """
        if len(batches) == 1:
            return batches[0]
        out = cls()
        for name, rule in _rules(cls):
            parts = [getattr(b, name) for b in batches]
            if rule == APPEND:
                setattr(out, name, [x for part in parts for x in part])
            elif rule == UNION:
                setattr(out, name, set().union(*parts))
            else:
                keyed: dict[Any, Any] = {}
                for part in parts:
                    keyed.update((rule.key(x), x) for x in part)
                setattr(out, name, list(keyed.values()))
        return out


def _rules(kind: type[ChangeSet]) -> list[tuple[str, str | Latest]]:
    """``(field name, merge rule)`` for every field of a change-set dataclass, in field order."""
    return [(f.name, f.metadata.get("merge", APPEND)) for f in dataclasses.fields(kind)]  # type: ignore[arg-type]


class _Appended(list):  # type: ignore[type-arg]
    """Accumulator of an ``APPEND`` field: ``add`` appends."""

    __slots__ = ()
    add = list.append

    def drain(self) -> list[Any]:
        return list(self)


class _United(set):  # type: ignore[type-arg]
    """Accumulator of a ``UNION`` field: ``add`` unites (it is a set)."""

    __slots__ = ()

    def drain(self) -> set[Any]:
        return set(self)


class _Latest(dict):  # type: ignore[type-arg]
    """Accumulator of a ``latest`` field: ``add`` keeps the entry as the latest of its key;
    ``key in accumulator`` asks whether an entry of that key was recorded."""

    __slots__ = ("key",)

    def __init__(self, key: Callable[[Any], Any]) -> None:
        super().__init__()
        self.key = key

    def add(self, entry: Any) -> None:
        self[self.key(entry)] = entry

    def drain(self) -> list[Any]:
        return list(self.values())


def _accumulator(rule: str | Latest) -> _Appended | _United | _Latest:
    if rule == APPEND:
        return _Appended()
    if rule == UNION:
        return _United()
    assert isinstance(rule, Latest)
    return _Latest(rule.key)


class ChangeRecorder(Generic[C]):
    """The recording side of a change log, for the change-set class ``kind``.

    It has one accumulator attribute per field of ``kind``, named like the field, each with
    ``add(entry)`` following the field's merge rule: ``recorder.events.add(event)`` appends,
    ``recorder.new_attempts.add(key)`` unites, ``recorder.updated.add(task)`` keeps ``task`` as
    the latest entry of its key (and ``task.id in recorder.updated`` asks whether it is there).
    Several parts of one core object may share a recorder; the owner drains it with ``take``.
    """

    def __init__(self, kind: type[C]) -> None:
        self._kind = kind
        self._rules = _rules(kind)
        self._reset()

    def __getattr__(self, name: str) -> Any:  # only reached for names that are not fields
        raise AttributeError(f"the change set has no field '{name}'")

    def _reset(self) -> None:
        for name, rule in self._rules:
            setattr(self, name, _accumulator(rule))

    def take(self) -> C:
        """Drain every accumulator.

        Returns:
            A new ``kind`` holding what was recorded since the last ``take`` (lists in order of
            recording, sets, latest entries in order of first recording of their key); the
            recorder starts empty again.
        """
        taken = self._kind(**{name: getattr(self, name).drain() for name, _ in self._rules})
        self._reset()
        return taken


class ChangeLog(Protocol[C]):
    """What a durable writer's core object offers its actor."""

    def take_changes(self) -> C:
        """Drain the log: everything changed since the last call, as one change set."""
        ...
