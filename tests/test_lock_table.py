"""Lock decisions without I/O: compatibility, fairness, tokens, leases, re-entry, deadlocks."""

from __future__ import annotations

import itertools

import pytest

from omoi_ray.core.locks import COMPATIBLE, LockMode, LockTable, RequestState
from omoi_ray.errors import (
    DeadlockError,
    LeaseExpiredError,
    LockNotHeldError,
    LockTimeoutError,
    LockUnavailableError,
    LockUpgradeError,
)
from omoi_ray.testing import FakeClock

X, S = LockMode.EXCLUSIVE, LockMode.SHARED
A, B, C = ("file", "a"), ("file", "b"), ("file", "c")


class Locks:
    def __init__(self) -> None:
        self.table = LockTable()
        self.clock = FakeClock(100.0)
        self.ids = itertools.count(1)

    def acquire(self, holder, *items, wait=None, ttl=10.0, rid=None):
        return self.table.acquire(rid or f"r{next(self.ids)}", holder, list(items), self.now, ttl=ttl, wait=wait)

    def grants(self, request):
        return [self.table.grant_of(g) or self.table.ended[g] for g in request.grants]

    def release(self, holder, request):
        return self.table.release(holder, request.grants, self.now)

    @property
    def now(self) -> float:
        return self.clock.now

    def tick(self, seconds):
        self.table.advance(self.clock.advance(seconds))


def test_compatibility_is_a_table():
    assert COMPATIBLE == {(S, S): True, (S, X): False, (X, S): False, (X, X): False}


def test_shared_holders_coexist_and_exclude_a_writer():
    lk = Locks()
    r1, r2 = lk.acquire("h1", (A, S)), lk.acquire("h2", (A, S))
    assert r1.state is r2.state is RequestState.GRANTED
    with pytest.raises(LockUnavailableError, match="file:a"):
        lk.acquire("w", (A, X), wait=0)


def test_tokens_increase_with_every_grant_of_a_resource():
    lk = Locks()
    tokens = []
    for holder in ("h1", "h2", "h3"):
        request = lk.acquire(holder, (A, X))
        tokens.append(lk.grants(request)[0].token)
        lk.release(holder, request)
    other = lk.grants(lk.acquire("h4", (B, X)))[0].token
    assert tokens == [1, 2, 3] and other == 1


def test_waiters_are_served_in_arrival_order_and_a_writer_is_not_starved_by_later_readers():
    lk = Locks()
    reader = lk.acquire("r1", (A, S))
    writer = lk.acquire("w", (A, X))
    late_reader = lk.acquire("r2", (A, S))
    assert writer.state is RequestState.WAITING
    assert late_reader.state is RequestState.WAITING  # it may not overtake the waiting writer
    lk.release("r1", reader)
    assert writer.state is RequestState.GRANTED and late_reader.state is RequestState.WAITING
    lk.release("w", writer)
    assert late_reader.state is RequestState.GRANTED


def test_consecutive_waiting_readers_are_granted_together():
    lk = Locks()
    writer = lk.acquire("w", (A, X))
    readers = [lk.acquire(f"r{i}", (A, S)) for i in range(3)]
    lk.release("w", writer)
    assert all(r.state is RequestState.GRANTED for r in readers)


def test_multi_resource_requests_are_all_or_nothing():
    lk = Locks()
    holder_b = lk.acquire("x", (B, X))
    both = lk.acquire("y", (A, X), (B, X))
    assert both.state is RequestState.WAITING and both.grants == []
    assert lk.table.holders_of(A) == []  # nothing partial is held meanwhile
    with pytest.raises(LockUnavailableError):
        lk.acquire("z", (A, S), wait=0)  # A is free, but "y" waits for it first
    lk.release("x", holder_b)
    assert both.state is RequestState.GRANTED
    assert sorted(g.resource for g in lk.grants(both)) == [A, B]


def test_try_lock_on_several_resources_names_the_busy_ones():
    lk = Locks()
    lk.acquire("x", (B, X))
    with pytest.raises(LockUnavailableError, match="not available now: file:b"):
        lk.acquire("y", (A, X), (B, X), wait=0)
    assert lk.table.holders_of(A) == []


def test_reentry_returns_the_same_grant_and_upgrade_is_for_the_sole_holder():
    lk = Locks()
    first = lk.acquire("h", (A, S))
    again = lk.acquire("h", (A, S))
    assert again.grants == first.grants
    upgraded = lk.acquire("h", (A, X))
    grant = lk.grants(upgraded)[0]
    assert grant.mode is X and grant.token == 2
    assert lk.table.ended[first.grants[0]].end_reason == "upgraded"
    lk.acquire("other", (B, S))
    lk.acquire("mine", (B, S))
    with pytest.raises(LockUpgradeError, match="only a sole holder may upgrade"):
        lk.acquire("mine", (B, X))


def test_downgrade_lets_waiting_readers_in():
    lk = Locks()
    lk.acquire("w", (A, X))
    reader = lk.acquire("r", (A, S))
    downgraded = lk.acquire("w", (A, S))
    assert lk.grants(downgraded)[0].mode is S
    assert reader.state is RequestState.GRANTED


def test_leases_expire_actively_and_say_so_afterwards():
    lk = Locks()
    held = lk.acquire("h", (A, X), ttl=5)
    waiter = lk.acquire("w", (A, X))
    lk.tick(3)
    lk.table.renew("h", held.grants, lk.now)
    lk.tick(4)
    assert waiter.state is RequestState.WAITING  # renewed at t=3, expires at t=8
    lk.tick(2)
    assert waiter.state is RequestState.GRANTED
    with pytest.raises(LeaseExpiredError, match="expired"):
        lk.table.renew("h", held.grants, lk.now)
    with pytest.raises(LeaseExpiredError):
        lk.release("h", held)


def test_release_errors_name_the_problem_and_change_nothing():
    lk = Locks()
    mine = lk.acquire("h", (A, X))
    with pytest.raises(LockNotHeldError, match="held by 'h', not 'intruder'"):
        lk.table.release("intruder", mine.grants, lk.now)
    with pytest.raises(LockNotHeldError, match="holds no grant 'forged'"):
        lk.table.release("h", ["forged"], lk.now)
    assert lk.table.holders_of(A)[0].holder == "h"
    lk.release("h", mine)
    with pytest.raises(LockNotHeldError, match="was already released"):
        lk.release("h", mine)


def test_waits_end_at_their_deadline():
    lk = Locks()
    lk.acquire("h", (A, X))
    waiter = lk.acquire("w", (A, X), wait=2)
    lk.tick(2)
    assert waiter.state is RequestState.FAILED and isinstance(waiter.error, LockTimeoutError)
    assert lk.table.waiting_on(A) == []
    with pytest.raises(LockTimeoutError):  # asking again with the same id: the same answer
        lk.acquire("w", (A, X), wait=2, rid=waiter.id)


def test_a_wait_that_would_close_a_cycle_is_refused_naming_it():
    lk = Locks()
    lk.acquire("alice", (A, X))
    lk.acquire("bob", (B, X))
    assert lk.acquire("alice", (B, X)).state is RequestState.WAITING
    with pytest.raises(DeadlockError) as err:
        lk.acquire("bob", (A, X))
    assert str(err.value) == "deadlock: bob -> alice -> bob"
    assert [r.holder for r in lk.table.waiting_on(A)] == []


def test_a_three_party_cycle_is_found():
    lk = Locks()
    for holder, res in (("p", A), ("q", B), ("r", C)):
        lk.acquire(holder, (res, X))
    lk.acquire("p", (B, X))
    lk.acquire("q", (C, X))
    with pytest.raises(DeadlockError, match="deadlock: r -> p -> q -> r"):
        lk.acquire("r", (A, X))


def test_the_same_request_id_gets_the_same_place_or_grant():
    lk = Locks()
    lk.acquire("h", (A, X))
    waiting = lk.acquire("w", (A, X), rid="req-1")
    assert lk.acquire("w", (A, X), rid="req-1") is waiting
    assert len(lk.table.waiting_on(A)) == 1


def test_releasing_a_holder_or_agent_frees_its_grants_and_drops_its_waits():
    lk = Locks()
    lk.table.acquire("r1", "agent-1/t1", [(A, X)], lk.now, ttl=10, wait=None, agent_id="agent-1")
    blocked = lk.table.acquire("r2", "agent-1/t2", [(B, X), (A, S)], lk.now, ttl=10, wait=None, agent_id="agent-1")
    other = lk.acquire("someone", (A, X))
    assert lk.table.release_all(lk.now, agent_id="agent-1") == 2
    assert blocked.state is RequestState.FAILED
    assert other.state is RequestState.GRANTED


def test_changes_log_what_to_persist():
    lk = Locks()
    request = lk.acquire("h", (A, X))
    changes = lk.table.take_changes()
    assert [g.id for g in changes.grants] == request.grants and changes.new_grants == set(request.grants)
    assert [(r.key, r.token) for r in changes.resources] == [(A, 1)]
    assert [e.type for e in changes.events] == ["lock.granted"]
    lk.release("h", request)
    assert [e.type for e in lk.table.take_changes().events] == ["lock.released"]


def test_an_upgrade_that_would_deadlock_a_waiter_is_refused_whole():
    lk = Locks()
    lk.acquire("h1", (B, S))
    shared_a = lk.acquire("h2", (A, S))
    lk.acquire("h3", (A, S), (B, X))  # waits for B behind h1
    with pytest.raises(DeadlockError, match="deadlock: h2 -> h3 -> h2"):
        lk.acquire("h2", (A, X), (B, S))  # upgrading A would make h3 wait for h2
    assert lk.grants(shared_a)[0].mode is S and lk.grants(shared_a)[0].active  # nothing changed
