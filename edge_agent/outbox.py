"""Durable store-and-forward: the SQLite (WAL) outbox between sensors and broker.

Delivery guarantee of this hop: a reading is acknowledged to nobody until it
is committed here, and it leaves only when the broker has acknowledged it
(MQTT QoS 1 PUBACK) - at-least-once, in seq order, with every seq either
delivered or covered by exactly one :class:`~telemetry_contract.Gap`. With
``receipts`` on, a reading or Gap leaves only when a
:class:`~telemetry_contract.Receipt` from the gateway covers it (Kafka has
it); after its PUBACK it is "awaiting a receipt" (:mod:`edge_agent.awaiting`).

* The per-device ``seq`` lives in the same database and is allocated in the
  same transaction that stores the reading, so a crash can neither lose a
  committed reading nor hand out a seq twice.
* ``synchronous=FULL`` (the default) fsyncs the WAL on every commit: a
  committed reading survives power loss. ``NORMAL`` survives ``kill -9`` only
  (see README.md for why FULL is required for the seq promise).
* The outbox is bounded by row count and age. Overflow drops the oldest
  readings not yet handed to the MQTT client and records one Gap row per
  contiguous dropped range (coalesced while the Gap has not been sent).
  Rows awaiting a receipt count against the bounds and go first, oldest
  first, without a Gap: the broker acknowledged them, so they keep the
  guarantee MQTT QoS 1 gave before receipts (lost only if the broker
  crashes), and may still arrive, while a Gap names only seqs that cannot.
  Rows with a PUBACK still due (in flight) are never dropped.
* A full disk (SQLITE_FULL, or a disk I/O error) is degraded mode, not a crash:
  readings that find no room keep their seqs (never handed out again),
  :meth:`append_readings` raises :class:`~edge_agent.errors.StorageFullError`,
  and the first write that succeeds once space returns stores a ``disk_full``
  Gap for exactly those seqs. Alerts with no room are counted and dropped;
  deletes wait. The lost range lives in memory only: a restart while the disk
  is still full hands those seqs out again (nothing carrying them was sent).
* All methods take one lock: the connection is shared by the main loop and
  whatever thread calls :meth:`stats`.

>>> import tempfile, pathlib
>>> d = tempfile.mkdtemp()
>>> ob = Outbox(pathlib.Path(d) / "o.db", device_id="d1", site="s1", max_rows=30)
>>> ob.open()
>>> ob.append_readings([lambda seq: ("t", b"r%d" % seq)] * 3, now_ms=1_767_225_600_000)
[0, 1, 2]
>>> [(r.seq, r.payload) for r in ob.next_batch(10)]
[(0, b'r0'), (1, b'r1'), (2, b'r2')]
>>> ob.ack([1, 2]); ob.stats().depth
1
>>> ob.close()

Other processes (accounting, tests) read an outbox file, even one in use,
without opening it for writing:

>>> read_next_seq(ob.path), read_pending_seqs(ob.path)
(3, {2})
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from edge_agent import awaiting
from edge_agent.errors import OutboxError, StorageFullError, out_of_space
from edge_agent.outbox_bounds import OutboxBounds
from edge_agent.outbox_files import OutboxRow, OutboxStats, read_next_seq, read_pending_seqs
from telemetry_contract import Gap, GapReason, encode
from telemetry_contract.receipts import merge_ranges

__all__ = ["Outbox", "OutboxRow", "OutboxStats", "read_next_seq", "read_pending_seqs"]

log = logging.getLogger(__name__)

#: Builds (topic, payload) for a reading once its seq is known.
ReadingBuilder = Callable[[int], tuple[str, bytes]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('next_seq', 0), ('dropped', 0), ('gaps', 0),
    ('acked_through', 0), ('released', 0);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- send order
    kind TEXT NOT NULL,                     -- reading | gap | alert
    seq INTEGER,                            -- reading: its seq; gap: first_seq
    last_seq INTEGER,                       -- gap: last_seq
    reason TEXT,                            -- gap: GapReason value
    topic TEXT NOT NULL,
    payload BLOB,                           -- null for gaps (built when sent)
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind_id ON outbox(kind, id);
-- Small agent state committed with the readings it reflects (e.g. stuck-probe runs).
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class Outbox(OutboxBounds):
    """The outbox database; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: str | Path,
        *,
        device_id: str,
        site: str,
        telemetry_topic: str = "",
        max_rows: int = 500_000,
        max_age_s: float = 0.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        drop_batch: int | None = None,
        ack_batch: int = 64,
        receipts: bool = False,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.path = Path(path)
        self._device_id = device_id
        self._site = site
        self._topic = telemetry_topic or f"thermowatch/{site}/{device_id}/telemetry"
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._sync = synchronous
        # Dropping in batches keeps an outage from producing one Gap per reading.
        self._drop_batch = drop_batch or max(1, max_rows // 100)
        self._clock_ms = clock_ms
        # Deferred deletes of acknowledged rows ride along with a reading transaction
        # once this many have collected (or when the size bound needs the room).
        self.ack_batch = max(1, ack_batch)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._cursor = 0  # highest row id handed to the MQTT client in this process
        self._depth = 0  # rows stored (kept in memory: count(*) is O(n) in SQLite)
        self._acked: list[int] = []  # acknowledged rows whose delete is not committed yet
        self._max_id = 0  # highest row id stored: nothing to hand out when cursor reaches it
        self._next_seq = 0  # the next seq to hand out (the database's, or beyond lost ones)
        #: Seqs given to readings the disk had no room for, not yet covered by a stored Gap.
        self.unstored: tuple[int, int] | None = None
        self.disk_full = False  # the last write found no room (until one succeeds)
        #: Readings and alerts lost to a full disk since open (metrics).
        self.unstored_readings = 0
        self.unstored_alerts = 0
        self._deferred = False  # open() found no room and will be tried again
        #: Keep readings and Gaps after their PUBACK until a receipt covers them.
        self.receipts = receipts
        self._acked_through = 0  # see edge_agent.awaiting (receipts only)
        self._acked_through_saved = 0
        self._receipted: list[tuple[int, int]] = []  # receipt ranges not deleted yet
        self._unnumbered = 0  # readings lost before any seq could be read

    # Lifecycle ---------------------------------------------------------------
    def open(self, *, defer_when_full: bool = False) -> None:
        """Open (creating if needed) the database; idempotent.

        ``defer_when_full``: no room to open (SQLite creates ``-wal``/``-shm``) is
        not fatal; every write tries again, readings taken meanwhile are counted
        and get the next seqs once it opens, covered by a ``disk_full`` Gap.
        """
        with self._lock:
            if self._db is not None:
                return
            db = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30.0
                )
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    db.close()
                    raise OutboxError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
                db.execute(f"PRAGMA synchronous={self._sync}")
                db.executescript(_SCHEMA)
                if self.receipts:
                    db.execute(awaiting.INDEX)
            except sqlite3.Error as exc:
                if db is not None:
                    db.close()
                if defer_when_full and out_of_space(exc):
                    self._deferred = True
                    self._note_full(exc)
                    return
                raise OutboxError(f"{self.path}: cannot open outbox: {exc}") from exc
            self._db = db
            self._deferred = False
            self._cursor = 0
            self._depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            self._max_id = int(db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0])
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            self._next_seq = int(meta["next_seq"])
            self._acked_through = self._acked_through_saved = int(meta["acked_through"])
            if self._unnumbered:  # readings taken before the outbox could open
                self.unstored = (self._next_seq, self._next_seq + self._unnumbered - 1)
                self._next_seq += self._unnumbered
                self._unnumbered = 0
            log.info("event=outbox_open path=%s synchronous=%s", self.path, self._sync)

    def _waiting(self, *, retry: bool = False) -> bool:
        """Still not open for want of space; writes (``retry``) try to open it again."""
        if retry and self._db is None and self._deferred:
            self.open(defer_when_full=True)
        return self._db is None and self._deferred

    def close(self) -> None:
        """Close the database; idempotent. Committed rows stay for the next start."""
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.flush_acks()
                self._db.close()
                self._db = None

    def __enter__(self) -> Outbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError("outbox is not open")
        return self._db

    # Writing -------------------------------------------------------------------
    def append_readings(
        self,
        builders: Sequence[ReadingBuilder],
        *,
        now_ms: int,
        state: tuple[str, bytes] | None = None,
    ) -> list[int]:
        """Allocate seqs and store readings, all in one transaction; returns the seqs.

        ``state`` (key, value), if given, is stored in the same transaction (see
        :meth:`load_state`): after a crash it matches the readings that survived.
        """
        if not builders:
            return []
        with self._lock:
            if self._waiting(retry=True):
                self._unnumbered += len(builders)
                self.unstored_readings += len(builders)
                raise StorageFullError([], "the outbox cannot be opened")
            first = self._next_seq
            seqs = list(range(first, first + len(builders)))
            try:
                with self._transaction() as db:
                    meta = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
                    stored = int(meta[0])
                    if stored > first:  # another writer moved on (not expected): never reuse
                        first = stored
                        seqs = list(range(first, first + len(builders)))
                    rows = []
                    for seq, build in zip(seqs, builders, strict=True):
                        topic, payload = build(seq)
                        rows.append(("reading", seq, topic, payload, now_ms))
                    if self.unstored is not None:  # space is back: say which seqs were lost first
                        lost_first, lost_last = self.unstored
                        self._insert_gap(db, lost_first, lost_last, GapReason.DISK_FULL, now_ms)
                        db.execute(
                            "UPDATE meta SET value=value+? WHERE key='dropped'",
                            (lost_last - lost_first + 1,),
                        )
                    db.executemany(
                        "INSERT INTO outbox(kind, seq, topic, payload, created_ms)"
                        " VALUES (?,?,?,?,?)",
                        rows,
                    )
                    self._max_id = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
                    db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (first + len(seqs),))
                    if state is not None:
                        db.execute("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", state)
                    self._depth += len(rows)
                    if self._deletes_due() or self._depth > self.max_rows:
                        self._delete_acked(db)
                    self._enforce_bounds(db, now_ms)
            except sqlite3.Error as exc:
                if not out_of_space(exc):
                    raise
                self._lose_readings(seqs, exc)
                raise StorageFullError(seqs, str(exc)) from exc
            self._next_seq = first + len(seqs)
            self._space_back()
        return seqs

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any failure, roll back (the database and
        what this object keeps of it) and re-raise."""
        db = self._conn
        before = list(self._acked), list(self._receipted), self._max_id, self._depth
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            self._rollback(db, before)
            raise

    def _lose_readings(self, seqs: list[int], exc: sqlite3.Error) -> None:
        """No room for ``seqs``: keep them given out and remember them for the Gap."""
        first = seqs[0] if self.unstored is None else self.unstored[0]
        self.unstored = (first, seqs[-1])
        self._next_seq = seqs[-1] + 1
        self.unstored_readings += len(seqs)
        self._note_full(exc)

    def _note_full(self, exc: sqlite3.Error) -> None:
        if not self.disk_full:  # one line per episode; the counters count the rest
            log.error("event=disk_full path=%s error=%r", self.path, str(exc))
        self.disk_full = True

    def _space_back(self) -> None:
        if self.disk_full or self.unstored is not None:
            log.warning("event=disk_space_back disk_full_gap=%s", self.unstored)
        self.unstored, self.disk_full = None, False

    def append(self, kind: str, topic: str, payload: bytes, *, now_ms: int) -> bool:
        """Store a message that carries no seq (an alert); False when the disk had no room."""
        with self._lock:
            if self._waiting(retry=True):
                self.unstored_alerts += 1
                return False
            try:
                with self._transaction() as db:
                    db.execute(
                        "INSERT INTO outbox(kind, topic, payload, created_ms) VALUES (?,?,?,?)",
                        (kind, topic, payload, now_ms),
                    )
                    self._max_id = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
                    self._depth += 1
                    self._delete_acked(db)
                    self._enforce_bounds(db, now_ms)
            except sqlite3.Error as exc:
                if not out_of_space(exc):
                    raise
                self.unstored_alerts += 1
                self._note_full(exc)
                return False
            if self.unstored is None:  # a Gap still owed keeps the condition on
                self._space_back()
        return True

    def _rollback(
        self, db: sqlite3.Connection, before: tuple[list[int], list[tuple[int, int]], int, int]
    ) -> None:
        # After SQLITE_FULL or an I/O error SQLite may have rolled back already, and a
        # ROLLBACK then fails with "cannot rollback - no transaction is active" (which
        # used to hide the real error). The acknowledged rows whose delete was undone
        # wait for the next transaction.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        self._acked, self._receipted = list(before[0]), list(before[1])
        self._max_id, self._depth = before[2], before[3]

    # Sending ---------------------------------------------------------------------
    def next_batch(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows not yet handed out in this process, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            if self._cursor >= self._max_id or self._waiting():
                return []
            rows = self._conn.execute(
                "SELECT id, kind, seq, last_seq, reason, topic, payload, created_ms FROM outbox "
                "WHERE id>? ORDER BY id LIMIT ?",
                (self._cursor, limit),
            ).fetchall()
            out = []
            for rid, kind, seq, last_seq, reason, topic, payload, created in rows:
                if kind == "gap":
                    payload = encode(
                        Gap(
                            device_id=self._device_id,
                            site=self._site,
                            ts=created,
                            first_seq=seq,
                            last_seq=last_seq,
                            reason=GapReason(reason),
                            message=self._gap_message(GapReason(reason), seq, last_seq),
                        )
                    )
                out.append(OutboxRow(rid, kind, seq, topic, bytes(payload)))
            if out:
                self._cursor = out[-1].id
            return out

    def ack(self, row_ids: Iterable[int], *, defer: bool = False) -> None:
        """The broker has these rows: delete them.

        With ``defer`` the deletes ride along with a later reading transaction
        once ``ack_batch`` have collected (or with :meth:`flush_acks`), saving
        an fsync per PUBACK batch and a DELETE per transaction. A crash before
        then only means those rows are published again: a byte-identical
        duplicate of the same seq, which QoS 1 allows anyway and the cloud
        stores once (document id ``device_id:seq``) - never a loss. No delete
        is ever needed for durability.
        """
        with self._lock:
            self._acked.extend(row_ids)
            if not defer:
                self.flush_acks()

    def flush_acks(self) -> None:
        """Delete the rows acknowledged so far (one transaction; kept for later if no room)."""
        with self._lock:
            if not (self._acked or self._receipted) or self._waiting():
                return
            try:
                with self._transaction() as db:
                    self._delete_acked(db)
            except sqlite3.Error as exc:
                if not out_of_space(exc):
                    raise
                self._note_full(exc)

    def _deletes_due(self) -> bool:
        """PUBACKed rows to delete (``ack_batch`` of them), or a receipt's: with this write.

        A receipt's ranges go with the next write whatever their size: one
        statement per range, and the outbox then shows what still awaits one.
        """
        return bool(self._receipted) or len(self._acked) >= self.ack_batch

    def _delete_acked(self, db: sqlite3.Connection) -> None:
        if self._acked:
            before = db.total_changes
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in self._acked])
            self._depth -= db.total_changes - before
            self._acked.clear()
        if self._receipted:
            self._depth -= awaiting.delete_receipted(db, merge_ranges(self._receipted))
            self._receipted.clear()
        if self._acked_through != self._acked_through_saved:
            db.execute("UPDATE meta SET value=? WHERE key='acked_through'", (self._acked_through,))
            self._acked_through_saved = self._acked_through

    def receipt(self, ranges: Sequence[tuple[int, int]], *, defer: bool = True) -> None:
        """A receipt covers these seq ranges: delete the readings (and wholly covered Gaps).

        Deferred like :meth:`ack`: the delete rides along with the next reading
        transaction. Whatever state the rows are in (awaiting, in flight,
        unsent); a PUBACK for a row deleted meanwhile is harmless.
        """
        with self._lock:
            self._receipted.extend(ranges)
            if not defer:
                self.flush_acks()

    def pubacked_through(self, row_id: int) -> None:
        """Every reading and Gap row up to ``row_id`` has been PUBACKed (receipts only)."""
        with self._lock:
            self._acked_through = max(self._acked_through, min(row_id, self._max_id))

    @property
    def handed_out(self) -> int:
        """The highest row id handed out by :meth:`next_batch` since the last rewind."""
        return self._cursor

    @property
    def next_seq(self) -> int:
        """The seq the next reading gets: every seq below it was allocated."""
        return self._next_seq

    def oldest_awaiting(self) -> int | None:
        """Row id of the oldest row awaiting a receipt (after the deletes due)."""
        with self._lock:
            if self._waiting() or not self._acked_through:
                return None
            self.flush_acks()
            return awaiting.oldest_awaiting(self._conn, self._acked_through)

    def rewind(self, after_id: int = 0) -> None:
        """Hand the stored rows with id > ``after_id`` out again, oldest first.

        Used after the MQTT client lost its in-flight state (``after_id=0``) and
        to send rows the broker refused again. Acknowledged rows are deleted
        first, so they are not sent twice (with receipts, rows awaiting a
        receipt are sent again: that is what the rewind is for).
        """
        with self._lock:
            self.flush_acks()
            self._cursor = min(self._cursor, after_id)

    def load_state(self, key: str) -> bytes | None:
        """The value last stored under ``key`` by :meth:`append_readings`, if any."""
        with self._lock:
            if self._waiting():
                return None
            row = self._conn.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def save_state(self, key: str, value: bytes) -> bool:
        """Store ``value`` under ``key`` on its own (fsynced like every commit); False when
        the disk has no room or the outbox cannot be opened (the caller goes on)."""
        with self._lock:
            if self._waiting(retry=True):
                return False
            try:
                with self._transaction() as db:
                    db.execute(
                        "INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)", (key, value)
                    )
            except sqlite3.Error as exc:
                if not out_of_space(exc):
                    raise
                self._note_full(exc)
                return False
        return True

    def pending_unsent(self) -> int:
        """Rows not yet handed to the MQTT client."""
        with self._lock:
            if self._waiting():
                return 0
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM outbox WHERE id>?", (self._cursor,)
                ).fetchone()[0]
            )

    def stats(self) -> OutboxStats:
        with self._lock:
            if self._waiting():
                lost = (self.unstored_readings, self.unstored_alerts)
                return OutboxStats(0, 0, None, self._next_seq, 0, 0, 0, *lost, True)
            self.flush_acks()
            db = self._conn
            depth, readings, oldest = db.execute(
                "SELECT count(*), sum(kind='reading'), min(created_ms) FROM outbox"
            ).fetchone()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            pending_gaps = int(
                db.execute("SELECT count(*) FROM outbox WHERE kind='gap'").fetchone()[0]
            )
            through = max(self._acked_through, int(meta["acked_through"]))
            waiting = awaiting.count_awaiting(db, through) if through else 0
        age = None if oldest is None else max(0.0, (self._clock_ms() - int(oldest)) / 1000.0)
        return OutboxStats(
            depth=int(depth),
            readings=int(readings or 0),
            oldest_age_s=age,
            next_seq=int(meta["next_seq"]),
            dropped=int(meta["dropped"]),
            gaps=int(meta["gaps"]),
            pending_gaps=pending_gaps,
            unstored_readings=self.unstored_readings,
            unstored_alerts=self.unstored_alerts,
            disk_full=self.disk_full,
            awaiting_receipt=waiting,
            released=int(meta["released"]),
        )

    def synchronous_mode(self) -> int:
        """``PRAGMA synchronous`` as SQLite reports it (2 = FULL, 1 = NORMAL)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA synchronous").fetchone()[0])
