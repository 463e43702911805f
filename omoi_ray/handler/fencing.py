"""Fencing: let a protected resource reject writes made with a stale lock token.

A lease alone cannot guarantee mutual exclusion: a holder that pauses (GC, SIGSTOP, a slow
network) can outlive its lease and write after someone else was granted the lock. Every grant
carries a token that only grows per resource; the resource remembers the largest token it has
accepted and refuses smaller ones. Two ready-made guards:

- ``fenced_update``: a conditional UPDATE of a database row that stores the token in a column
  (``fence_token`` by default) and succeeds only if no larger token wrote the row before.
- ``TokenFile``: a token file for a directory or workspace; ``admit(token)`` raises if a larger
  token has been admitted (the check and the write are atomic under an OS file lock).

Rules:
- Both raise ``StaleTokenError`` and change nothing when the token is stale.
- Equal tokens are admitted: the holder of a grant may write many times.
- The guard lives with the resource, not with the lock manager: a token is checked where the
  write lands.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from omoi_ray.errors import StaleTokenError


def fenced_update(
    conn: sa.Connection,
    table: sa.Table,
    key: Mapping[str, Any],
    token: int,
    values: Mapping[str, Any],
    *,
    token_column: str = "fence_token",
) -> None:
    """``UPDATE table SET values, token_column = token WHERE key AND token_column <= token``.

    Runs inside the caller's transaction; a NULL token column counts as never fenced.

    Args:
        conn: a connection with a transaction open.
        table: the table holding the row and the token column.
        key: column name -> value, selecting one row.
        token: the grant's fencing token.
        values: column name -> new value.
        token_column: the column that keeps the largest token written.

    Raises:
        StaleTokenError: the row was written with a larger token (``current`` on the error).
        LookupError: no row matches ``key``.
    """
    where = [table.c[name] == value for name, value in key.items()]
    fence = table.c[token_column]
    stmt = (
        table.update()
        .where(*where, sa.or_(fence.is_(None), fence <= token))
        .values({**values, token_column: token})
    )
    if conn.execute(stmt).rowcount == 1:
        return
    current = conn.execute(sa.select(fence).where(*where)).first()
    if current is None:
        raise LookupError(f"no row of {table.name} matches {dict(key)}")
    raise StaleTokenError(
        f"{table.name} {dict(key)} was written with token {current[0]}; token {token} is stale "
        "(its lease ended and the lock was granted again)",
        token=token,
        current=current[0],
    )


class TokenFile:
    """The largest token admitted to a directory, kept in a small file inside it."""

    def __init__(self, directory: str | os.PathLike[str], name: str = ".omoi-fence") -> None:
        """Keep the token in ``directory/name`` (created on the first ``admit``)."""
        self.path = Path(directory) / name

    def current(self) -> int | None:
        """Return the largest token admitted so far, or None when none was."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def admit(self, token: int) -> None:
        """Record ``token`` unless a larger one was admitted; atomic under an exclusive file lock.

        Raises:
            StaleTokenError: a larger token was admitted (``current`` on the error); nothing changes.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            current = int(text) if text else None
            if current is not None and token < current:
                raise StaleTokenError(
                    f"{self.path.parent} admitted token {current}; token {token} is stale",
                    token=token,
                    current=current,
                )
            handle.seek(0)
            handle.truncate()
            handle.write(str(token))
            handle.flush()
            os.fsync(handle.fileno())
