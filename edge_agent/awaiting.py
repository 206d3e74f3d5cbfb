"""Outbox rows awaiting a receipt: the SQL behind :class:`~edge_agent.outbox.Outbox`'s receipts.

With receipts on, a reading or Gap the broker acknowledged (PUBACK) stays in
the outbox until a :class:`~telemetry_contract.Receipt` from the gateway says
Kafka has it. Which stored rows the broker acknowledged is one number, the
``acked_through`` row id: every reading or Gap row at or below it was
acknowledged at least once (rows are handed out in id order, and the
publisher moves it only past rows with no PUBACK still due and none
refused). Nothing is written per PUBACK: the number rides along with the next
reading transaction, and a stale (lower) value after a crash only means fewer
rows count as awaiting.

>>> import sqlite3
>>> db = sqlite3.connect(":memory:")
>>> _ = db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, kind TEXT, seq INTEGER,"
...                " last_seq INTEGER, created_ms INTEGER)")
>>> db.executemany("INSERT INTO outbox VALUES (?,?,?,?,0)",
...     [(1, "reading", 0, None), (2, "reading", 1, None), (3, "gap", 2, 4),
...      (4, "alert", None, None), (5, "reading", 5, None)])  # doctest: +ELLIPSIS
<sqlite3.Cursor ...>
>>> count_awaiting(db, 3), oldest_awaiting(db, 3)
(3, 1)
>>> delete_receipted(db, [(1, 3)])  # the Gap 2..4 is not wholly covered: it stays
1
>>> delete_receipted(db, [(0, 0), (2, 5)])
3
>>> release_awaiting(db, 5, limit=10, older_than_ms=None)  # only the alert is left
[]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["count_awaiting", "delete_receipted", "oldest_awaiting", "release_awaiting"]

# Alerts (no seq) keep delete-on-PUBACK: every query here names the kinds with a seq.
#: Readings by seq: a receipt names seqs, not row ids (created with receipts on).
INDEX = "CREATE INDEX IF NOT EXISTS outbox_seq ON outbox(seq) WHERE seq IS NOT NULL"


def delete_receipted(db: sqlite3.Connection, ranges: Sequence[tuple[int, int]]) -> int:
    """Delete the readings, and the Gaps wholly inside one range, that ``ranges`` cover.

    ``ranges`` are merged (see :func:`telemetry_contract.receipts.merge_ranges`),
    so a Gap covered by two touching ranges is inside one. Returns the rows deleted.
    """
    before = db.total_changes
    db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND kind='reading'", list(ranges))
    db.executemany(
        "DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND kind='gap' AND last_seq<=?",
        [(first, last, last) for first, last in ranges],
    )
    return db.total_changes - before


def release_awaiting(
    db: sqlite3.Connection, through_id: int, *, limit: int, older_than_ms: int | None
) -> list[tuple[int, int]]:
    """Delete up to ``limit`` of the oldest rows awaiting a receipt (id <= ``through_id``),
    with ``older_than_ms`` only the leading ones created before it; returns their (id, seq).

    No Gap is written for them: the broker acknowledged them, so they may
    well arrive, and a Gap must name only seqs the edge never delivered.
    Reads at most ``limit`` rows in id order (a Kafka outage may leave
    hundreds of thousands awaiting: no scan of them all per write).
    """
    rows = db.execute(
        "SELECT id, seq, created_ms FROM outbox WHERE id<=? AND kind IN ('reading','gap') "
        "ORDER BY id LIMIT ?",
        (through_id, limit),
    ).fetchall()
    if older_than_ms is not None:
        young = next((i for i, r in enumerate(rows) if r[2] >= older_than_ms), len(rows))
        rows = rows[:young]
    db.executemany("DELETE FROM outbox WHERE id=?", [(r[0],) for r in rows])
    return [(int(r[0]), int(r[1])) for r in rows]


def count_awaiting(db: sqlite3.Connection, through_id: int) -> int:
    """Readings and Gaps the broker acknowledged that no receipt has covered yet."""
    row = db.execute(
        "SELECT count(*) FROM outbox WHERE id<=? AND kind IN ('reading','gap')", (through_id,)
    ).fetchone()
    return int(row[0])


def oldest_awaiting(db: sqlite3.Connection, through_id: int) -> int | None:
    """Row id of the oldest row awaiting a receipt, if any."""
    row = db.execute(
        "SELECT id FROM outbox WHERE id<=? AND kind IN ('reading','gap') ORDER BY id LIMIT 1",
        (through_id,),
    ).fetchone()
    return None if row is None else int(row[0])
