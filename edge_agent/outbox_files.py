"""What an outbox hands out and reports, and reading an outbox file from outside
the agent (accounting, tests), read-only.

Re-exported by :mod:`edge_agent.outbox`, whose docstring shows them at work.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OutboxRow", "OutboxStats", "read_next_seq", "read_pending_seqs"]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for its PUBACK."""

    id: int
    kind: str
    seq: int | None
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What ``thermowatch edge outbox`` shows."""

    depth: int
    readings: int
    oldest_age_s: float | None
    next_seq: int
    dropped: int
    gaps: int
    pending_gaps: int
    #: Readings (and alerts) lost to a full disk since this process opened the outbox.
    unstored_readings: int = 0
    unstored_alerts: int = 0
    #: The last write found no room (cleared by the next write that succeeds).
    disk_full: bool = False
    #: Readings and Gaps the broker acknowledged that no receipt has covered yet.
    awaiting_receipt: int = 0
    #: Rows awaiting a receipt that the bounds deleted (no Gap: the broker had them).
    released: int = 0


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

    Still here means not (yet) acknowledged by the broker (with receipts: not
    yet covered by a receipt); a seq allocated and gone was acknowledged, or
    dropped under a bound (a ``Gap`` says so), or with receipts released
    under a bound after its PUBACK.
    """
    with _read_only(path) as db:
        rows = db.execute("SELECT seq FROM outbox WHERE kind='reading'").fetchall()
    return {int(r[0]) for r in rows}
