"""Handler of the ticket end-to-end tests (tests/test_tickets.py): returns what its payload
says (``result``), plus the ticket context it was handed (``seen``)."""

from __future__ import annotations


def phase_work(task, ctx):
    result = dict((task.payload or {}).get("result") or {})
    result["seen"] = ctx.ticket_context()
    return result
