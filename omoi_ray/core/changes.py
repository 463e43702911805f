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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

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

    NOTIFY: ClassVar[tuple[str, ...]] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in self.NOTIFY)  # type: ignore[arg-type]

    def worth_flushing(self) -> bool:
        """Anything to write, or anyone to tell once it is written."""
        return bool(self) or any(getattr(self, name) for name in self.NOTIFY)

    @classmethod
    def merge(cls: type[C], batches: Sequence[C]) -> C:
        """One change set equivalent to applying ``batches`` in order (a single batch is returned
        as it is)."""
        if len(batches) == 1:
            return batches[0]
        out = cls()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            rule = f.metadata.get("merge", APPEND)
            parts = [getattr(b, f.name) for b in batches]
            if rule == APPEND:
                setattr(out, f.name, [x for part in parts for x in part])
            elif rule == UNION:
                setattr(out, f.name, set().union(*parts))
            else:
                keyed: dict[Any, Any] = {}
                for part in parts:
                    keyed.update((rule.key(x), x) for x in part)
                setattr(out, f.name, list(keyed.values()))
        return out


class ChangeLog(Protocol[C]):
    """What a durable writer's core object offers its actor."""

    def take_changes(self) -> C:
        """Drain the log: everything changed since the last call, as one change set."""
        ...
