"""Threads and messages in the pure core (``omoi_ray.core.threads``), plus the edge checks
(``omoi_ray.specs.messages``) and the handler inbox (``omoi_ray.handler.inbox``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omoi_ray.core.model import ThreadStatus
from omoi_ray.core.scheduler import TaskGraph
from omoi_ray.core.storable import same_json
from omoi_ray.core.threads import EVENT_BODY_MAX_BYTES, Post, differs
from omoi_ray.errors import (
    InvalidMessageError,
    MessageTooLargeError,
    NotParticipantError,
    ThreadExistsError,
    ThreadNotFoundError,
)
from omoi_ray.handler.inbox import Inbox
from omoi_ray.specs import messages as msg
from omoi_ray.testing import fake_message, run_handler


def graph(*agents: str) -> TaskGraph:
    g = TaskGraph()
    for name in agents or ("a", "b", "c", "d", "e", "f"):
        g.register_agent(name, f"i-{name}", frozenset(), 1, 0.0)
    g.take_changes()
    return g


def test_a_broadcast_has_one_receipt_per_recipient_and_none_for_its_sender():
    g = graph()
    g.threads.open("t", "review", ["a", "b", "c", "d", "e", "f"], 1.0)
    m = g.threads.post("t", "a", {"hello": 1}, 2.0)
    changes = g.take_changes()
    assert [(r.message_id, r.recipient) for r in changes.receipts] == [(m.id, p) for p in "bcdef"]
    assert [x.id for x in changes.messages] == [m.id]
    assert [e.type for e in changes.events] == ["agent.collab.started", "agent.message.sent"]


def test_a_direct_message_has_one_receipt():
    g = graph()
    g.threads.open("t", "consultation", ["a", "b", "c"], 1.0)
    g.threads.post("t", "a", "psst", 2.0, to="c")
    assert [r.recipient for r in g.take_changes().receipts] == ["c"]


def test_seq_numbers_messages_in_posting_order_across_threads():
    g = graph()
    g.threads.open("t1", "x", ["a", "b"], 1.0)
    g.threads.open("t2", "x", ["a", "b"], 1.0)
    seqs = [g.threads.post(t, "a", i, 2.0).seq for i, t in enumerate(["t1", "t2", "t1"])]
    assert seqs == [1, 2, 3]


@pytest.mark.parametrize(
    ("post", "error"),
    [
        (Post("t", "c", "x"), NotParticipantError),  # c is a known agent, not a participant
        (Post("t", "a", "x", to="c"), NotParticipantError),
        (Post("t", "a", "x", to="a"), InvalidMessageError),
        (Post("nope", "a", "x"), ThreadNotFoundError),
    ],
)
def test_bad_posts_raise_typed_errors_and_record_nothing(post, error):
    g = graph()
    g.threads.open("t", "x", ["a", "b"], 1.0)
    g.take_changes()
    with pytest.raises(error):
        g.threads.post_many([Post("t", "a", "fine"), post], 2.0)  # all or nothing
    changes = g.take_changes()
    assert not changes.messages and not changes.receipts and not changes.events
    assert g.threads.next_seq == 1


def test_a_closed_thread_takes_no_posts_and_cannot_be_closed_twice():
    g = graph()
    g.threads.open("t", "x", ["a", "b"], 1.0)
    closed = g.threads.close("t", "resolved", 2.0, outcome={"winner": "b"})
    assert (closed.status, closed.outcome, closed.closed_at) == (ThreadStatus.RESOLVED, {"winner": "b"}, 2.0)
    assert "t" not in g.threads.active
    with pytest.raises(ThreadNotFoundError):
        g.threads.post("t", "a", "late", 3.0)
    with pytest.raises(ThreadNotFoundError):
        g.threads.close("t", "abandoned", 3.0)
    types = [e.type for e in g.take_changes().events]
    assert types == ["agent.collab.started", "agent.collab.ended"]


def test_open_refuses_unknown_participants_none_at_all_and_a_taken_id():
    g = graph("a", "b")
    with pytest.raises(InvalidMessageError, match="'zed' is not a known agent"):
        g.threads.open("t", "x", ["a", "zed"], 1.0)
    with pytest.raises(InvalidMessageError, match="at least one participant"):
        g.threads.open("t", "x", [], 1.0)
    g.threads.open("t", "x", ["a", "b", "a"], 1.0)
    assert g.threads.active["t"].participants == ("a", "b")
    with pytest.raises(ThreadExistsError):
        g.threads.open("t", "x", ["a"], 1.0)
    with pytest.raises(InvalidMessageError, match="resolved' or 'abandoned"):
        g.threads.close("t", "active", 2.0)


def test_the_sent_event_carries_the_body_only_up_to_1_kib():
    g = graph()
    g.threads.open("t", "x", ["a", "b"], 1.0)
    g.threads.post("t", "a", "s" * 10, 2.0)
    g.threads.post("t", "a", "s" * EVENT_BODY_MAX_BYTES, 2.0)  # 2 quotes over the limit
    small, large = [e.payload for e in g.take_changes().events if e.type == "agent.message.sent"]
    assert small["body"] == "s" * 10
    assert "body" not in large and large["sender"] == "a" and large["to"] is None


def test_restore_keeps_active_threads_and_continues_seq():
    g = graph()
    g.threads.open("t", "x", ["a", "b"], 1.0)
    g.threads.post("t", "a", 1, 2.0)
    changes = g.take_changes()
    fresh = graph()
    fresh.threads.restore(changes.threads, next_seq=changes.messages[-1].seq + 1)
    assert fresh.threads.post("t", "b", 2, 3.0).seq == 2


def test_mark_read_records_each_message_once():
    g = graph()
    g.threads.mark_read(["m1", "m2", "m1"], "b", 5.0)
    assert g.take_changes().reads == [("m1", "b", 5.0), ("m2", "b", 5.0)]


# ------------------------------------------------------------------ edge checks


@pytest.mark.parametrize(
    ("item", "error", "text"),
    [
        ({"thread": "t", "sender": "a\x00", "body": 1}, InvalidMessageError, "sender"),
        ({"thread": "t", "sender": "a", "body": "x\x00y"}, InvalidMessageError, "unstorable"),
        ({"thread": "t", "sender": "a", "body": float("nan")}, InvalidMessageError, "finite"),
        ({"thread": "t", "sender": "a", "body": "x" * 200}, MessageTooLargeError, "OMOI_MESSAGE_MAX_BYTES"),
        ({"thread": "t", "sender": "a"}, InvalidMessageError, "lacks 'body'"),
        ({"thread": "t", "sender": "a", "body": 1, "cc": "b"}, InvalidMessageError, "unknown field"),
        ({"thread": "t", "sender": "a", "body": 1, "kind": "bad kind"}, InvalidMessageError, "kind"),
        ("not a mapping", InvalidMessageError, "mapping"),
    ],
)
def test_posts_are_checked_at_the_edge(item, error, text):
    with pytest.raises(error, match=text):
        msg.parse_posts([item], max_bytes=100)


def test_a_string_where_a_list_belongs_is_refused():
    with pytest.raises(InvalidMessageError, match="must be a list"):
        msg.names("alice", "participants")
    with pytest.raises(InvalidMessageError, match="list of mappings"):
        msg.parse_posts({"thread": "t"}, max_bytes=100)
    for bad in (0, -1, True, 1.5, msg.MAX_PAGE + 1):
        with pytest.raises(InvalidMessageError):
            msg.limit(bad)
    for bad in ("abc", "-1", -5, "1" * 30):  # a seq (an int from 0) is a cursor too
        with pytest.raises(InvalidMessageError):
            msg.cursor(bad)


# ------------------------------------------------------------------ the inbox


def test_inbox_get_blocks_in_sync_code_and_is_awaitable_in_async_code():
    inbox = Inbox()
    got: list = []
    reader = threading.Thread(target=lambda: got.append(inbox.get(timeout=30)))
    reader.start()
    inbox.put_many([fake_message("one")])
    reader.join()
    assert got[0].body == "one"
    assert inbox.get(timeout=0) is None

    async def read() -> list:
        waiting = asyncio.ensure_future(inbox.get(timeout=30))
        await asyncio.sleep(0)  # let it park
        threading.Thread(target=inbox.put_many, args=([fake_message("two")],)).start()
        return [(await waiting).body, await inbox.get(timeout=0)]

    assert asyncio.run(read()) == ["two", None]


def test_a_full_inbox_drops_its_oldest():
    inbox = Inbox(maxlen=2)
    inbox.put_many(fake_message(i) for i in range(3))
    assert (inbox.dropped, [inbox.get_nowait().body for _ in range(2)]) == (1, [1, 2])


def test_run_handler_gives_a_handler_an_inbox_and_records_what_it_sends():
    async def echo(task, ctx):
        m = await ctx.inbox.get(timeout=1)
        await ctx.send_async(m.sender, {"echo": m.body}, thread=m.thread_id)
        return m.body

    ctx_inbox = [{"body": "hi", "sender": "peer", "thread_id": "t1"}]
    from omoi_ray.testing import make_context

    ctx = make_context(agent_id="me", inbox=ctx_inbox)
    assert run_handler(echo, ctx=ctx) == "hi"
    assert ctx.sent == [{"thread": "t1", "to": "peer", "body": {"echo": "hi"}, "kind": "message", "sender": "me"}]


def test_a_hand_offs_thread_and_the_protocol_kinds_are_refused_by_hand():
    g = graph()
    g.threads.open("handoff.o1", "handoff", ["a", "b"], 1.0, metadata={"offer_id": "o1"})
    g.threads.open("t", "handoff", ["a", "b"], 1.0)  # a user's own thread of type handoff
    with pytest.raises(InvalidMessageError, match="belongs to hand-off offer 'o1'"):
        g.threads.check_by_hand("handoff.o1", "message")
    with pytest.raises(InvalidMessageError, match="closed by the hand-off only"):
        g.threads.check_by_hand("handoff.o1")
    with pytest.raises(InvalidMessageError, match="kind 'handoff.accepted' is the scheduler's own"):
        g.threads.check_by_hand("t", "handoff.accepted")
    g.threads.check_by_hand("t", "message")  # the user's own thread stays theirs
    g.threads.check_by_hand("t")


@pytest.mark.parametrize("value", [7, "7", "0", 0])
def test_a_cursor_is_a_page_cursor_or_a_message_seq(value):
    assert msg.cursor(value) == int(value)


@pytest.mark.parametrize("value", [True, -1, 2**63, "9999999999999999999", "9223372036854775808", "1e3", " 1", 1.0])
def test_a_cursor_outside_what_a_store_holds_is_refused_before_any_query(value):
    with pytest.raises(InvalidMessageError, match="cursor must be"):
        msg.cursor(value)


def test_a_stored_message_id_answers_only_the_same_post():
    stored = Post("t", "a", {"v": [1, 2.5], "ok": True}, "b", "message", "a" * 32)
    # the same post, its body as a store gives it back (a tuple read as a list, 2.5 as 2.5)
    assert differs(Post("t", "a", {"ok": True, "v": (1, 2.5)}, "b", "message", "a" * 32), stored) is None
    for field, post in (
        ("thread_id", stored._replace(thread_id="t2")),
        ("sender", stored._replace(sender="c")),
        ("to", stored._replace(to=None)),
        ("kind", stored._replace(kind="other")),
        ("body", stored._replace(body={"v": [1, 2.5], "ok": 1})),  # a boolean is not a number
        ("body", stored._replace(body={"v": [1, 2.5]})),
        ("body", stored._replace(body={"v": [1, 2.5, 3], "ok": True})),
    ):
        assert differs(post, stored) == field


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1e20, 10**20, True),  # a store may give a float back as the integer it equals
        (1, 1.0, True),
        ((1, [2]), [1, (2,)], True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        (None, None, True),
        (True, 1, False),
        (False, 0, False),
        (0, None, False),
        ("1", 1, False),
        ([1], {"0": 1}, False),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([[[1]]], [[[2]]], False),
    ],
)
def test_same_json_compares_documents_as_stored(a, b, same):
    assert same_json(a, b) is same and same_json(b, a) is same


def test_bodies_metadata_and_outcomes_are_taken_as_stored():
    class Text(str):
        pass

    assert msg.json_object({"pair": (1, 2), Text("k"): Text("v")}, "outcome") == {"pair": [1, 2], "k": "v"}
    assert type(msg.json_object({"pair": (1, 2)}, "outcome")["pair"]) is list
    assert msg.json_object(None, "outcome") is None
    post = msg.parse_post({"thread": "t", "sender": "a", "body": ({"a": (1,)}, Text("x"))}, 1000)
    assert post.body == [{"a": [1]}, "x"] and type(post.body) is list and type(post.body[1]) is str
