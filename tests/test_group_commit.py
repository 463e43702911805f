"""Group commit: batching, ordering of acknowledgements, and retries that never write twice."""

from __future__ import annotations

import asyncio

from omoi_ray.actors.group_commit import GroupCommit

from omoi_ray.core.task_changes import TaskChanges
from tests.graph_harness import Harness, spec


class FlakyStore:
    """Records committed batches; fails the way a database can, on request."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures  # "before": nothing written; "after": written, then the error
        self.committed_marks: list = []
        self.writes = 0

    def _maybe_fail(self, mark, do_write) -> None:
        mode = self.failures.pop(0) if self.failures else None
        if mode == "before":
            raise ConnectionError("server closed the connection")
        do_write(mark)
        if mode == "after":
            raise ConnectionError("connection lost during COMMIT")

    def _record(self, mark) -> None:
        self.writes += 1
        self.committed_marks.append(mark)

    def apply(self, changes, mark) -> None:
        self._maybe_fail(mark, self._record)

    def prepare(self, changes):
        return ["rows of", changes]

    def write(self, prepared, mark) -> None:
        self._maybe_fail(mark, self._record)

    def committed(self, mark) -> bool:
        return mark in self.committed_marks


def changes(*ids: str) -> TaskChanges:
    h = Harness()
    h.submit(*[spec(i) for i in ids])
    return h.graph.take_changes()


def run(store: FlakyStore, batches: list[TaskChanges]) -> list[TaskChanges]:
    seen: list[TaskChanges] = []

    async def main() -> None:
        commit = GroupCommit(store, seen.append, writer="test", give_up_after=30)
        for batch in batches:
            commit.add(batch)
        await asyncio.wait_for(commit.sync(), 30)
        commit.close()

    asyncio.run(main())
    return seen


def test_change_sets_added_together_share_one_commit():
    store = FlakyStore([])
    seen = run(store, [changes("a"), changes("b"), changes("c")])
    assert store.writes == 1
    assert [t.id for t in seen[0].created] == ["a", "b", "c"]


def test_a_failed_commit_is_retried_until_it_lands():
    store = FlakyStore(["before", "before"])
    seen = run(store, [changes("a")])
    assert store.writes == 1 and len(seen) == 1


def test_a_commit_whose_reply_was_lost_is_not_written_again():
    store = FlakyStore(["after"])
    seen = run(store, [changes("a")])
    assert store.writes == 1  # the retry saw the mark and stopped
    assert len(seen) == 1


def test_merge_keeps_the_latest_state_and_every_event():
    h = Harness()
    h.submit(spec("a"))
    first = h.graph.take_changes()
    ag = h.agent()
    h.claim(ag)
    second = h.graph.take_changes()
    merged = TaskChanges.merge([first, second])
    assert [e.type for e in merged.events] == [e.type for e in first.events + second.events]
    assert [t.id for t in merged.created] == ["a"] and [t.id for t in merged.updated] == ["a"]
