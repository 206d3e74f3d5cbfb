"""The outbox's bounds: what overflow drops, and the Gap rows that say so.

Part of :class:`~edge_agent.outbox.Outbox` (its module docstring states the
policy); kept apart so each file stays small. Every method runs inside the
outbox's write transaction, under its lock.
"""

from __future__ import annotations

import logging
import sqlite3

from edge_agent import awaiting
from telemetry_contract import GapReason

__all__ = ["OutboxBounds"]

log = logging.getLogger("edge_agent.outbox")  # the outbox's lines, under its name


class OutboxBounds:
    """Age and size bounds of :class:`~edge_agent.outbox.Outbox` (a base class only)."""

    max_rows: int
    max_age_s: float
    _drop_batch: int
    _cursor: int
    _depth: int
    _max_id: int
    _acked_through: int
    _topic: str

    @property
    def _unsent_after(self) -> int:
        """Rows above this id were not handed out (or were, and are awaiting a receipt)."""
        return max(self._cursor, self._acked_through)

    def _enforce_bounds(self, db: sqlite3.Connection, now_ms: int) -> None:
        """Drop what exceeds age and size, never a row in flight (it may arrive); rows
        awaiting a receipt go first, without a Gap (see the module docstring)."""
        if self.max_age_s > 0:
            limit = now_ms - int(self.max_age_s * 1000)
            if self._acked_through:
                self._release(
                    db,
                    awaiting.release_awaiting(
                        db, self._acked_through, limit=self._drop_batch, older_than_ms=limit
                    ),
                )
            head = db.execute(
                "SELECT created_ms FROM outbox WHERE kind='reading' AND id>? ORDER BY id LIMIT 1",
                (self._unsent_after,),
            ).fetchone()
            if head is not None and head[0] < limit:
                # The prefix of unsent readings up to the first young one (id order, so a
                # wall-clock step back cannot make the dropped range non-contiguous).
                young = db.execute(
                    "SELECT min(id) FROM outbox WHERE kind='reading' AND id>? AND created_ms>=?",
                    (self._unsent_after, limit),
                ).fetchone()[0]
                old = db.execute(
                    "SELECT id, seq FROM outbox WHERE kind='reading' AND id>? AND id<? ORDER BY id",
                    (self._unsent_after, young if young is not None else 2**62),
                ).fetchall()
                if old:
                    self._drop(db, old, GapReason.OUTBOX_EXPIRED, now_ms)
        if self._depth > self.max_rows:
            n = max(self._depth - self.max_rows, self._drop_batch)
            if self._acked_through:
                released = awaiting.release_awaiting(
                    db, self._acked_through, limit=n, older_than_ms=None
                )
                self._release(db, released)
                n -= len(released)
            oldest = (
                db.execute(
                    "SELECT id, seq FROM outbox WHERE kind='reading' AND id>? ORDER BY id LIMIT ?",
                    (self._unsent_after, n),
                ).fetchall()
                if n > 0
                else []
            )
            if oldest:
                self._drop(db, oldest, GapReason.OUTBOX_FULL, now_ms)

    def _drop(
        self,
        db: sqlite3.Connection,
        rows: list[tuple[int, int]],
        reason: GapReason,
        now_ms: int,
    ) -> None:
        # The rows are the oldest unsent readings, in seq order; their seqs are
        # contiguous except where a disk_full Gap already covers the seqs between.
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][1] != rows[i - 1][1] + 1:
                self._drop_run(db, rows[start:i], reason, now_ms)
                start = i

    def _drop_run(
        self,
        db: sqlite3.Connection,
        rows: list[tuple[int, int]],
        reason: GapReason,
        now_ms: int,
    ) -> None:
        first_seq, last_seq = rows[0][1], rows[-1][1]
        db.execute(
            "DELETE FROM outbox WHERE kind='reading' AND id>=? AND id<=?",
            (rows[0][0], rows[-1][0]),
        )
        self._depth -= len(rows)
        db.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (len(rows),))
        prev = db.execute(
            "SELECT id, seq, last_seq FROM outbox WHERE kind='gap' AND id>? AND reason=? "
            "ORDER BY id DESC LIMIT 1",
            (self._unsent_after, reason.value),
        ).fetchone()
        if prev is not None and prev[2] + 1 == first_seq:
            db.execute("UPDATE outbox SET last_seq=? WHERE id=?", (last_seq, prev[0]))
            first_seq = prev[1]
        else:
            self._insert_gap(db, first_seq, last_seq, reason, now_ms)
        log.warning(
            "event=outbox_drop reason=%s first_seq=%d last_seq=%d dropped=%d",
            reason.value,
            first_seq,
            last_seq,
            len(rows),
        )

    def _release(self, db: sqlite3.Connection, rows: list[tuple[int, int]]) -> None:
        if not rows:
            return
        self._depth -= len(rows)
        db.execute("UPDATE meta SET value=value+? WHERE key='released'", (len(rows),))
        log.warning(
            "event=outbox_release_unreceipted first_seq=%d last_seq=%d released=%d",
            rows[0][1],
            rows[-1][1],
            len(rows),
        )

    def _insert_gap(
        self, db: sqlite3.Connection, first_seq: int, last_seq: int, reason: GapReason, now_ms: int
    ) -> None:
        db.execute(
            "INSERT INTO outbox(kind, seq, last_seq, reason, topic, created_ms) "
            "VALUES ('gap',?,?,?,?,?)",
            (first_seq, last_seq, reason.value, self._topic, now_ms),
        )
        self._max_id = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
        db.execute("UPDATE meta SET value=value+1 WHERE key='gaps'")
        self._depth += 1

    def _gap_message(self, reason: GapReason, first_seq: int, last_seq: int) -> str:
        if reason is GapReason.DISK_FULL:
            return f"disk full: {last_seq - first_seq + 1} readings could not be stored"
        return f"outbox bound reached (max_rows={self.max_rows}, max_age_s={self.max_age_s:g})"
