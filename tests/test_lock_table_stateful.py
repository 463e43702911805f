"""The lock table against a naive model, over random operations, crashes included.

The model recomputes everything by brute force: which waiting requests can be granted (a
fixpoint over the global arrival order) and whether a new wait would close a cycle. After every
step the table and the model must agree on who holds what in which mode, who waits, and each
resource's token; and the table's own invariants must hold (compatible holders only, tokens
strictly increasing per resource).
"""

from __future__ import annotations

import copy
import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from omoi_ray.core.locks import COMPATIBLE, LockMode, LockTable, RequestState
from omoi_ray.errors import (
    DeadlockError,
    InvalidLockRequestError,
    LeaseExpiredError,
    LockNotHeldError,
    LockUnavailableError,
    LockUpgradeError,
)

X, S = LockMode.EXCLUSIVE, LockMode.SHARED
RESOURCES = [("r", "a"), ("r", "b"), ("r", "c")]
HOLDERS = ["h1", "h2", "h3"]


class Model:
    def __init__(self) -> None:
        self.held: dict[tuple, dict[str, tuple[LockMode, float, float]]] = {r: {} for r in RESOURCES}  # holder -> (mode, ttl, expires)
        self.tokens = {r: 0 for r in RESOURCES}
        self.waiting: list[dict] = []  # arrival order: {id, holder, items, deadline, ttl}

    def free(self, res, mode, holder):
        return all(h == holder or COMPATIBLE[(m, mode)] for h, (m, _, _) in self.held[res].items())

    def grantable(self, req, index):
        for res, mode in req["items"]:
            if res in self.held_by(req["holder"]):
                continue
            if not self.free(res, mode, req["holder"]):
                return False
            for earlier in self.waiting[:index]:
                em = dict(earlier["items"]).get(res)
                if em is not None and earlier["holder"] != req["holder"] and not COMPATIBLE[(em, mode)]:
                    return False
        return True

    def held_by(self, holder):
        return {r for r in RESOURCES if holder in self.held[r]}

    def grant(self, req, now):
        for res, mode in req["items"]:
            if res not in self.held_by(req["holder"]):
                self.tokens[res] += 1
                self.held[res][req["holder"]] = (mode, req["ttl"], now + req["ttl"])

    def settle(self, now):
        changed = True
        while changed:
            changed = False
            for i, req in enumerate(self.waiting):
                if self.grantable(req, i):
                    self.grant(req, now)
                    del self.waiting[i]
                    changed = True
                    break

    def blockers(self, holder, items, before):
        out = set()
        for res, mode in items:
            for h, (m, _, _) in self.held[res].items():
                if h != holder and not COMPATIBLE[(m, mode)]:
                    out.add(h)
            for earlier in before:
                em = dict(earlier["items"]).get(res)
                if em is not None and earlier["holder"] != holder and not COMPATIBLE[(em, mode)]:
                    out.add(earlier["holder"])
        return out

    def closes_cycle(self, holder, items):
        edges = {}
        for i, req in enumerate(self.waiting):
            pending = [(r, m) for r, m in req["items"] if r not in self.held_by(req["holder"])]
            edges.setdefault(req["holder"], set()).update(self.blockers(req["holder"], pending, self.waiting[:i]))
        frontier, seen = list(self.blockers(holder, items, self.waiting)), set()
        while frontier:
            node = frontier.pop()
            if node == holder:
                return True
            if node not in seen:
                seen.add(node)
                frontier.extend(edges.get(node, ()))
        return False


class LockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.table = LockTable()
        self.model = Model()
        self.ids = itertools.count(1)
        self.db = {"tokens": {}, "grants": {}, "requests": {}}
        self.seen_tokens: dict[tuple, int] = {}

    def persist(self):
        changes = self.table.take_changes()
        for state in changes.resources:
            self.db["tokens"][state.key] = state.token
        for grant in changes.grants:
            if grant.active:
                self.db["grants"][grant.id] = copy.copy(grant)
            else:
                self.db["grants"].pop(grant.id, None)
        for request in changes.requests:
            if request.state is RequestState.WAITING:
                self.db["requests"][request.id] = copy.deepcopy(request)
            else:
                self.db["requests"].pop(request.id, None)

    def expire_model(self):
        for res in RESOURCES:
            for h, (m, ttl, exp) in list(self.model.held[res].items()):
                if exp <= self.now:
                    del self.model.held[res][h]
        self.model.waiting = [w for w in self.model.waiting if w["deadline"] is None or w["deadline"] > self.now]
        self.model.settle(self.now)

    @rule(
        holder=st.sampled_from(HOLDERS),
        picks=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([S, X])), min_size=1, max_size=2, unique_by=lambda p: p[0]),
        wait=st.sampled_from([0, None, 3.0]),
        ttl=st.sampled_from([4.0, 20.0]),
    )
    def acquire(self, holder, picks, wait, ttl):
        items = [(RESOURCES[i], m) for i, m in picks]
        model = self.model
        # The model's expectation.
        held = model.held_by(holder)
        upgrade_refused = any(
            r in held and m is X and model.held[r][holder][0] is S and len(model.held[r]) > 1 for r, m in items
        )
        new = [(r, m) for r, m in items if r not in held]
        already_waiting = any(
            w["holder"] == holder and r in dict(w["items"]) for w in model.waiting for r, _ in items
        )
        index = len(model.waiting)
        probe = {"holder": holder, "items": new}
        free_now = not new or model.grantable(probe, index)
        changed = copy.deepcopy(model)  # the model with this request's upgrades and downgrades made
        for r, m in items:
            if r in held and changed.held[r][holder][0] is not m:
                changed.held[r][holder] = (m, ttl, self.now + ttl)
        would_close_cycle = bool(new) and changed.closes_cycle(holder, new)
        try:
            request = self.table.acquire(f"q{next(self.ids)}", holder, items, self.now, ttl=ttl, wait=wait)
        except LockUpgradeError:
            assert upgrade_refused
            return
        except InvalidLockRequestError:
            assert already_waiting and not upgrade_refused
            return
        except LockUnavailableError:
            assert not upgrade_refused and not free_now and wait == 0
            return
        except DeadlockError:
            assert not upgrade_refused and not free_now and wait != 0 and would_close_cycle
            return
        assert not upgrade_refused and not already_waiting
        # Mode changes on resources already held (upgrade or downgrade), then grant or wait.
        for r, m in items:
            if r in held and model.held[r][holder][0] is not m:
                model.tokens[r] += 1
                model.held[r][holder] = (m, ttl, self.now + ttl)
        if free_now:
            model.grant({"holder": holder, "items": new, "ttl": ttl}, self.now)
            assert request.state is RequestState.GRANTED
        else:
            assert wait != 0 and not would_close_cycle
            model.waiting.append({"id": request.id, "holder": holder, "items": items, "ttl": ttl,
                                  "deadline": None if wait is None else self.now + wait})
            assert request.state is RequestState.WAITING
        model.settle(self.now)
        self.persist()

    @rule(holder=st.sampled_from(HOLDERS), choice=st.sampled_from(["own", "other", "forged", "stale"]), renew=st.booleans())
    def release_or_renew(self, holder, choice, renew):
        own = [g for g in self.table.grants.values() if g.holder == holder]
        other = [g for g in self.table.grants.values() if g.holder != holder]
        stale = [g for g in self.table.ended.values() if g.holder == holder]
        pool = {"own": own, "other": other, "forged": [None], "stale": stale}[choice]
        if not pool:
            return
        grant = pool[0]
        gid = "forged-id" if grant is None else grant.id
        op = self.table.renew if renew else self.table.release
        if choice == "own":
            op(holder, [gid], self.now)
            res = grant.resource
            if renew:
                mode, ttl, _ = self.model.held[res][holder]
                self.model.held[res][holder] = (mode, ttl, self.now + ttl)
            else:
                del self.model.held[res][holder]
                self.model.settle(self.now)
        else:
            try:
                op(holder, [gid], self.now)
                raise AssertionError("a grant that is not ours must be refused")
            except LeaseExpiredError:
                assert choice == "stale" and grant.end_reason == "expired"
            except LockNotHeldError:
                pass
        self.persist()

    @rule(seconds=st.sampled_from([1.0, 3.0, 5.0]))
    def tick(self, seconds):
        self.now += seconds
        self.table.advance(self.now)
        self.expire_model()
        self.persist()

    @rule()
    def crash_and_rebuild(self):
        db = copy.deepcopy(self.db)
        self.table = LockTable()
        self.table.restore(
            list(db["tokens"].items()), list(db["grants"].values()), list(db["requests"].values()),
            f"p{next(self.ids)}-", self.now,
        )
        self.persist()

    @invariant()
    def agrees_with_the_model(self):
        got = {}
        for grant in self.table.grants.values():
            got.setdefault(grant.resource, {})[grant.holder] = grant.mode
        want = {r: {h: m for h, (m, _, _) in hs.items()} for r, hs in self.model.held.items() if hs}
        assert got == want
        assert [r.id for r in sorted(
            (r for r in self.table.requests.values() if r.state is RequestState.WAITING), key=lambda r: r.seq
        )] == [w["id"] for w in self.model.waiting]
        for res in RESOURCES:
            state = self.table.resources.get(res)
            assert (state.token if state else 0) == self.model.tokens[res]

    @invariant()
    def holders_are_compatible_and_tokens_increase(self):
        for state in self.table.resources.values():
            holders = list(state.holders.values())
            for a, b in itertools.combinations(holders, 2):
                assert a.holder == b.holder or COMPATIBLE[(a.mode, b.mode)]
            for grant in holders:
                assert grant.token >= self.seen_tokens.get((state.key, grant.id), grant.token)
                self.seen_tokens[(state.key, grant.id)] = grant.token
            assert all(g.token <= state.token for g in holders)


LockMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestLockTable = LockMachine.TestCase
