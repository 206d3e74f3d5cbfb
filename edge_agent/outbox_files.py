"""Reading an outbox file from outside the agent (accounting, tests), read-only.

Re-exported by :mod:`edge_agent.outbox`, whose docstring shows them at work.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["read_next_seq", "read_pending_seqs"]


@contextlib.contextmanager
def _read_only(path: str | Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def read_next_seq(path: str | Path) -> int:
    """The seq the outbox at ``path`` hands out next: every seq below it was allocated.

    Opens the file read-only (the agent may be running: WAL gives a consistent
    snapshot). Seqs are allocated in the transaction that stores their
    readings, so every seq below the value read is durably stored (still
    here, or already acknowledged by the broker).
    """
    with _read_only(path) as db:
        row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
    return int(row[0]) if row else 0


def read_pending_seqs(path: str | Path) -> set[int]:
    """The seqs of the readings still in the outbox at ``path`` (read-only).

    Still here means not (yet) acknowledged by the broker; a seq allocated
    and gone was acknowledged, or dropped under a bound (a ``Gap`` says so).
    """
    with _read_only(path) as db:
        rows = db.execute("SELECT seq FROM outbox WHERE kind='reading'").fetchall()
    return {int(r[0]) for r in rows}
