"""Client actors for the fenced-mutual-exclusion fault test: slow read-modify-write under a lock.

Each turn appends one element to a list kept twice in a shared database: in a plain row (read,
wait, write back) and in a fenced row (the same, but written with ``fenced_update`` and the
lock's token). An element counts as acknowledged only if the fenced write succeeded.
"""

from __future__ import annotations

import json
import os
import time

import ray
import sqlalchemy as sa

from omoi_ray.client.locks import LockClient
from omoi_ray.errors import StaleTokenError
from omoi_ray.handler.fencing import fenced_update
from omoi_ray.naming import LOCKS_NAME
from tests.handlers import gate

RESOURCE = "bank:ledger"


def ledger_table() -> tuple[sa.MetaData, sa.Table]:
    meta = sa.MetaData()
    table = sa.Table(
        "t1_ledger", meta,
        sa.Column("which", sa.String(16), primary_key=True),
        sa.Column("elements", sa.Text),
        sa.Column("fence_token", sa.BigInteger, nullable=True),
    )
    return meta, table


@ray.remote(num_cpus=0, max_restarts=0)
class LedgerClient:
    def __init__(self, name: str, db_url: str, namespace: str, ttl: float) -> None:
        self.name = name
        self.engine = sa.create_engine(db_url)
        _, self.table = ledger_table()
        self.locks = LockClient(ray.get_actor(LOCKS_NAME, namespace=namespace), holder=name)
        self.ttl = ttl

    def pid(self) -> int:
        return os.getpid()

    def _read(self, which: str) -> list[str]:
        with self.engine.connect() as conn:
            return json.loads(conn.execute(sa.select(self.table.c.elements).where(self.table.c.which == which)).scalar())

    def turn(self, element: str, hold: float = 0.02, pause_gate: str | None = None) -> dict:
        """One slow read-modify-write under the lock. With ``pause_gate``, stop after reading
        until the gate opens (the test freezes this process meanwhile)."""
        lease = self.locks.acquire(RESOURCE, wait=60, ttl=self.ttl)
        plain, fenced = self._read("plain"), self._read("fenced")
        if pause_gate:
            ray.get(gate().open.remote(f"{pause_gate}:read"))
            ray.get(gate().wait.remote(f"{pause_gate}:go", 120))
        time.sleep(hold)  # the slow part of the read-modify-write (stands for real work)
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.which == "plain").values(elements=json.dumps(plain + [element])))
        acknowledged = True
        try:
            with self.engine.begin() as conn:
                fenced_update(conn, self.table, {"which": "fenced"}, lease.token, {"elements": json.dumps(fenced + [element])})
        except StaleTokenError:
            acknowledged = False
        try:
            lease.release()
        except Exception:  # noqa: BLE001 - an expired lease has nothing to give back
            pass
        return {"element": element, "token": lease.token, "acknowledged": acknowledged}

    def work(self, turns: int) -> list[dict]:
        return [self.turn(f"{self.name}-{i}") for i in range(turns)]
