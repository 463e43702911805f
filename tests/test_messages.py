"""Threads, messages, receipts and live inboxes end to end, on Ray, with SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import ray

import omoi_ray as omoi
from omoi_ray.core.model import Message, Receipt, Thread, ThreadStatus
from omoi_ray.core.task_changes import TaskChanges
from omoi_ray.errors import (
    AgentNotFoundError,
    InvalidMessageError,
    MessageNotFoundError,
    MessageTooLargeError,
    NotParticipantError,
    ThreadClosedError,
    ThreadExistsError,
    ThreadNotFoundError,
)
from omoi_ray.store.store import Store
from tests.conftest import until

HANDLERS = {"read_async": "tests.message_handlers:read_inbox_async", "read_sync": "tests.message_handlers:read_inbox_sync"}
CAP = "msgtest"
NAMES = [f"m{i}" for i in range(6)]


@pytest.fixture(scope="module")
def team(runtime):
    """Six agents able to run the inbox readers (one slot each)."""
    for name in NAMES:
        runtime.spawn_agent(name, capabilities=[f"{CAP}-{name}"], capacity=1, handlers=HANDLERS, exist_ok=True)
    return runtime


def _thread(rt, participants, **kw):
    return rt.messages.create_thread("review", participants, thread_id=f"th-{uuid.uuid4().hex[:10]}", **kw)


def test_a_broadcast_has_a_receipt_per_recipient_and_mark_read_keeps_the_first_time(team):
    rt = team
    th = _thread(rt, NAMES)
    sent = rt.messages.send(th.id, "m0", {"hello": "all"})
    assert sent.to is None and sent.thread_id == th.id
    receipts = rt.messages.receipts(sent.id)
    assert sorted(r.recipient for r in receipts) == NAMES[1:]  # five recipients, none for the sender
    assert all(r.read_at is None for r in receipts)
    assert rt.messages.mark_read("m3", [sent.id]) == 1
    first = {r.recipient: r.read_at for r in rt.messages.receipts(sent.id)}["m3"]
    assert first is not None
    rt.messages.mark_read("m3", [sent.id, sent.id])  # again: idempotent, the first time stays
    again = {r.recipient: r.read_at for r in rt.messages.receipts(sent.id)}
    assert again["m3"] == first and again["m4"] is None
    with pytest.raises(MessageNotFoundError, match="m0"):
        rt.messages.mark_read("m0", [sent.id])  # the sender has no receipt


def test_threads_page_newest_first_and_messages_oldest_first(team):
    rt = team
    ticket = f"tk-{uuid.uuid4().hex[:8]}"
    made = [_thread(rt, ["m1", "m2"], ticket_id=ticket).id for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = rt.messages.threads(ticket_id=ticket, limit=2, cursor=cursor)
        seen += [t.id for t in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == made[::-1]
    assert [t.id for t in rt.messages.threads(participant="m2", ticket_id=ticket, status="active").items] == made[::-1][:5]
    rt.messages.send_many([{"thread": made[0], "sender": "m1", "body": i} for i in range(5)])
    bodies, cursor = [], None
    for _ in range(3):
        page = rt.messages.messages(made[0], cursor=cursor, limit=2)
        bodies += [m.body for m in page.items]
        cursor = page.cursor
    assert bodies == [0, 1, 2, 3, 4]
    assert rt.messages.messages(made[0], cursor=cursor).items == []


def test_unread_spans_threads_and_shrinks_as_messages_are_read(team):
    rt = team
    t1, t2 = _thread(rt, ["m1", "m4"]), _thread(rt, ["m2", "m4", "m5"])
    before = {m.id for m in rt.messages.unread("m4", limit=10_000).items}
    a = rt.messages.send(t1.id, "m1", "from t1", to="m4")
    b = rt.messages.send(t2.id, "m2", "from t2")  # broadcast: m4 and m5
    c = rt.messages.send(t2.id, "m2", "only m5", to="m5")
    unread = [m for m in rt.messages.unread("m4", limit=10_000).items if m.id not in before]
    assert [m.id for m in unread] == [a.id, b.id]
    assert c.id not in {m.id for m in rt.messages.unread("m4", limit=10_000).items}
    rt.messages.mark_read("m4", [a.id])
    assert [m.id for m in rt.messages.unread("m4", limit=10_000).items if m.id not in before] == [b.id]
    with pytest.raises(AgentNotFoundError):
        rt.messages.unread("nobody-here")


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_running_handler_reads_messages_from_its_live_inbox(team, uid, mode):
    rt = team
    th = _thread(rt, ["m1", "m2"])
    task = omoi.TaskSpec(id=f"{uid}-read-{mode}", type=f"read_{mode}", requires=[f"{CAP}-m2"],
                         payload={"n": 3, "reply": True, "wait": 60, "thread": th.id})
    rt.submit([task])
    until(lambda: rt.get(task.id).status == "running", "the reader runs")
    rt.messages.send(th.id, "m1", {"n": 1}, to="m2")
    rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": {"n": 2}},
                           {"thread": th.id, "sender": "m1", "body": {"n": 3}, "to": "m2"}])
    assert rt.wait([task.id], timeout=60) == {task.id: "completed"}
    assert rt.get(task.id).result == [{"n": 1}, {"n": 2}, {"n": 3}]
    replies = [m for m in rt.messages.messages(th.id).items if m.sender == "m2"]
    assert [(m.to, m.body) for m in replies] == [("m1", {"read": 3})]
    unread = {m.thread_id for m in rt.messages.unread("m2", limit=10_000).items}
    assert th.id not in unread  # the handler marked what it read


def test_a_driver_receives_and_follows_messages_as_they_commit(team):
    rt = team
    th = _thread(rt, ["m3", "m5"])
    start = rt.messages.receive("m5", timeout=0)
    assert start.items == []
    sent = rt.messages.send(th.id, "m3", "one", to="m5")
    page = rt.messages.receive("m5", cursor=start.cursor, timeout=30)
    assert [m.id for m in page.items] == [sent.id]

    async def follow_two() -> list:
        got = []
        stream = rt.messages.follow("m5", cursor=page.cursor)
        sender = asyncio.get_running_loop().run_in_executor(
            None, lambda: rt.messages.send_many([{"thread": th.id, "sender": "m3", "body": b} for b in ("two", "three")])
        )
        async for message in stream:
            got.append(message.body)
            if len(got) == 2:
                break
        await sender
        return got

    assert asyncio.run(follow_two()) == ["two", "three"]


def _stored_counts(rt, thread_id):
    return len(rt.messages.messages(thread_id, limit=10_000).items)


@pytest.mark.parametrize(
    ("post", "error"),
    [
        ({"sender": "m5", "body": "x"}, NotParticipantError),
        ({"sender": "m1", "body": "x", "to": "m5"}, NotParticipantError),
        ({"sender": "m1", "body": "x\x00"}, InvalidMessageError),
        ({"sender": "m1\x00", "body": "x"}, InvalidMessageError),
        ({"sender": "m1", "body": "x" * 70_000}, MessageTooLargeError),
        ({"sender": "m1", "body": "x", "kind": ""}, InvalidMessageError),
    ],
)
def test_bad_posts_are_typed_errors_and_store_nothing(team, post, error):
    rt = team
    th = _thread(rt, ["m1", "m2"])
    with pytest.raises(error):
        rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": "fine"}, {"thread": th.id, **post}])
    assert _stored_counts(rt, th.id) == 0


def test_calls_answer_json_in_the_shape_it_is_stored_in(team):
    rt = team
    th = _thread(rt, ["m1", "m2"], metadata={"tags": ("a", "b")})
    assert th.metadata == {"tags": ["a", "b"]} == rt.messages.thread(th.id).metadata
    sent = rt.messages.send(th.id, "m1", {"pair": (1, 2)})
    assert type(sent.body["pair"]) is list and sent.body == rt.messages.messages(th.id).items[0].body
    closed = rt.messages.close_thread(th.id, outcome={"pair": (1, 2)})
    assert type(closed.outcome["pair"]) is list
    assert closed.outcome == rt.messages.thread(th.id).outcome == {"pair": [1, 2]}


def test_closed_and_unknown_threads_and_bad_threads_are_refused(team):
    rt = team
    th = _thread(rt, ["m1", "m2"])
    closed = rt.messages.close_thread(th.id, "abandoned", outcome={"why": "test"})
    assert (closed.status, closed.outcome) == ("abandoned", {"why": "test"})
    assert rt.messages.thread(th.id).status == "abandoned"
    with pytest.raises(ThreadClosedError, match=th.id):
        rt.messages.send(th.id, "m1", "late")
    with pytest.raises(ThreadClosedError):
        rt.messages.close_thread(th.id)
    with pytest.raises(ThreadNotFoundError, match="no-such-thread"):
        rt.messages.send("no-such-thread", "m1", "x")
    with pytest.raises(ThreadNotFoundError):
        rt.messages.messages("no-such-thread")
    with pytest.raises(ThreadExistsError):
        rt.messages.create_thread("review", ["m1"], thread_id=th.id)
    with pytest.raises(InvalidMessageError, match="not a known agent"):
        _thread(rt, ["m1", "ghost"])
    with pytest.raises(InvalidMessageError, match="must be a list"):
        _thread(rt, "m1")
    with pytest.raises(InvalidMessageError):
        rt.messages.create_thread("bad\x00type", ["m1"])
    with pytest.raises(InvalidMessageError) as err:  # no id given: no generated id to name
        rt.messages.create_thread("review", [])
    assert str(err.value) == "a new thread needs at least one participant"
    with pytest.raises(MessageNotFoundError):
        rt.messages.receipts("no-such-message")
    assert _stored_counts(rt, th.id) == 0


def test_the_message_events_are_committed_with_their_changes(team):
    rt = team
    th = _thread(rt, ["m1", "m2"])
    small = rt.messages.send(th.id, "m1", {"k": "v"})
    rt.messages.send(th.id, "m1", "x" * 2000)
    rt.messages.close_thread(th.id, outcome={"done": True})
    events = rt.events(th.id)
    assert [e.type for e in events] == ["agent.collab.started", "agent.message.sent", "agent.message.sent",
                                        "agent.collab.ended"]
    assert events[1].payload == {"thread_id": th.id, "message_id": small.id, "sender": "m1", "to": None,
                                 "kind": "message", "body": {"k": "v"}}
    assert "body" not in events[2].payload


def test_a_batch_of_posts_made_again_is_answered_with_the_stored_messages_not_stored_twice(team):
    rt = team
    th = _thread(rt, ["m1", "m2"])
    posts = [{"thread": th.id, "sender": "m1", "body": i, "id": uuid.uuid4().hex} for i in range(2)]
    first = rt.messages.send_many(posts)
    assert [m.id for m in first] == [p["id"] for p in posts]
    # the same call again, as the call policy repeats it when the scheduler restarted before answering
    again = rt.messages.send_many(posts)
    assert [(m.id, m.seq, m.body) for m in again] == [(m.id, m.seq, m.body) for m in first]
    assert [m.body for m in rt.messages.messages(th.id).items] == [0, 1]
    assert [e.type for e in rt.events(th.id)].count("agent.message.sent") == 2
    # ids used by a stored batch, in a batch that is not that one: refused, nothing stored
    other = _thread(rt, ["m1", "m2"])
    with pytest.raises(InvalidMessageError, match=f"message id '{posts[0]['id']}' is already used"):
        rt.messages.send_many([{**posts[0], "thread": other.id}])
    with pytest.raises(InvalidMessageError, match="already used"):
        rt.messages.send_many([posts[0], {"thread": th.id, "sender": "m2", "body": "new", "id": uuid.uuid4().hex}])
    twice = uuid.uuid4().hex
    with pytest.raises(InvalidMessageError, match=r"posts\[1\]\.id .* repeats an earlier post's id"):
        rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": b, "id": twice} for b in "ab"])
    for bad in ("x" * 32, uuid.uuid4().hex.upper(), uuid.uuid4().hex + "\n", 7):
        with pytest.raises(InvalidMessageError, match=r"posts\[0\]\.id must be a message id"):
            rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": 1, "id": bad}])
    assert [m.body for m in rt.messages.messages(th.id).items] == [0, 1]
    assert rt.messages.messages(other.id).items == []


def test_a_message_id_reused_for_a_different_post_is_refused_never_dropped(team):
    rt = team
    th = _thread(rt, ["m1", "m2", "m3"])
    mid = uuid.uuid4().hex
    first = rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": {"v": 1}, "id": mid}])[0]
    for changed in ({"body": {"v": 2}}, {"body": {"v": True}}, {"to": "m2"}, {"kind": "other"}):
        with pytest.raises(InvalidMessageError, match=f"message id '{mid}' is already used for a different post"):
            rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": {"v": 1}, "id": mid, **changed}])
    with pytest.raises(InvalidMessageError, match="already used for a different post"):
        rt.messages.send_many([{"thread": th.id, "sender": "m3", "body": {"v": 1}, "id": mid}])
    # the same post again is answered with the stored message
    again = rt.messages.send_many([{"thread": th.id, "sender": "m1", "body": {"v": 1.0}, "id": mid}])[0]
    assert (again.id, again.seq, again.body) == (first.id, first.seq, {"v": 1})
    assert [m.body for m in rt.messages.messages(th.id).items] == [{"v": 1}]

    # calls racing with one id: one posts; an identical one gets its message, a different one is refused
    same, other = uuid.uuid4().hex, uuid.uuid4().hex
    refs = [rt.scheduler.send_many.remote([{"thread": th.id, "sender": "m1", "body": "same", "id": same}])
            for _ in range(4)]
    refs += [rt.scheduler.send_many.remote([{"thread": th.id, "sender": "m1", "body": {"n": n}, "id": other}])
             for n in range(4)]
    answers = []
    for ref in refs:
        try:
            answers.append(ray.get(ref, timeout=60)[0])
        except InvalidMessageError as exc:
            assert "already used for a different post" in str(exc)
            answers.append(None)
    identical = answers[:4]
    assert all(a is not None for a in identical) and len({(a.id, a.seq) for a in identical}) == 1
    differing = [a for a in answers[4:] if a is not None]
    assert len(differing) == 1 and differing[0].id == other
    bodies = [m.body for m in rt.messages.messages(th.id).items]
    assert len(bodies) == 3 and bodies[0] == {"v": 1} and "same" in bodies and differing[0].body in bodies
    assert [e.type for e in rt.events(th.id)].count("agent.message.sent") == 3


def test_a_restarted_scheduler_keeps_active_threads_and_message_order(own_runtime):
    rt = own_runtime
    for name in ("r1", "r2"):
        rt.spawn_agent(name, capabilities=[f"cap-{name}"], capacity=1, handlers=HANDLERS)
    th = rt.messages.create_thread("consultation", ["r1", "r2"], thread_id="th-restart")
    start = rt.messages.receive("r2", timeout=0)
    first = rt.messages.send(th.id, "r1", "before")
    pid = rt.describe()["pid"]
    ray.kill(rt.scheduler, no_restart=False)
    until(lambda: rt.describe()["pid"] != pid, "the scheduler restarted")
    # a cursor from before the restart still finds what was stored before it
    assert [m.id for m in rt.messages.receive("r2", cursor=start.cursor, timeout=0).items] == [first.id]
    second = rt.messages.send(th.id, "r2", "after")  # the thread is still active in memory
    assert second.seq > first.seq
    assert [m.body for m in rt.messages.messages(th.id).items] == ["before", "after"]
    assert rt.messages.thread(th.id).status == "active"


def test_store_keeps_the_first_read_and_prunes_closed_threads_past_retention(db_url):
    store = Store(db_url)
    now = time.time()
    old = Thread("old", "x", ("a", "b"), now - 100, now - 100, ThreadStatus.RESOLVED, closed_at=now - 50)
    young = Thread("young", "x", ("a", "b"), now, now, ThreadStatus.RESOLVED, closed_at=now)
    live = Thread("live", "x", ("a", "b"), now - 100, now - 100)
    messages = [Message(f"m-{t.id}", i + 1, t.id, "a", None, {"i": i}, now) for i, t in enumerate((old, young, live))]
    receipts = [Receipt(m.id, m.thread_id, "b", m.seq) for m in messages]
    store.apply(TaskChanges(threads=[old, young, live], messages=messages, receipts=receipts))
    store.apply(TaskChanges(reads=[("m-live", "b", now + 1)]))
    store.apply(TaskChanges(reads=[("m-live", "b", now + 9)]))
    [receipt] = store.receipt_rows(["m-live"])
    assert receipt["read_at"].timestamp() == pytest.approx(now + 1, abs=1e-3)
    assert store.prune_threads(now - 10) == 1
    assert set(store.thread_rows(["old", "young", "live"])) == {"young", "live"}
    assert store.receipt_rows(["m-old"]) == [] and store.message_rows("old", 0, 10) == []
    snapshot = store.load()
    assert [t.id for t in snapshot.threads] == ["live"] and snapshot.next_message_seq == 4
    store.dispose()
