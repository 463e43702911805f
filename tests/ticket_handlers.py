"""Handler of the ticket end-to-end tests (tests/test_tickets.py): returns what its payload
says (``result``), plus the ticket context it was handed (``seen``); raises ``ValueError`` with
the payload's ``fail`` text when there is one."""

from __future__ import annotations


def phase_work(task, ctx):
    if (task.payload or {}).get("fail"):
        raise ValueError(task.payload["fail"])
    result = dict((task.payload or {}).get("result") or {})
    result["seen"] = ctx.ticket_context()
    return result
