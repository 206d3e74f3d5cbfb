"""The SQLite outbox: seq allocation, ack, replay, bounds with exact Gaps, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox, read_next_seq, read_pending_seqs
from telemetry_contract import Gap, GapReason, decode_as

NOW = 1_767_225_600_000


def reading(seq: int) -> tuple[str, bytes]:
    return "t/telemetry", b"r%d" % seq


def make(tmp_path: Path, **kw: object) -> Outbox:
    ob = Outbox(tmp_path / "o.db", device_id="d1", site="s1", clock_ms=lambda: NOW, **kw)  # type: ignore[arg-type]
    ob.open()
    return ob


def test_wal_and_full_fsync_by_default(tmp_path: Path) -> None:
    ob = make(tmp_path)
    assert ob.synchronous_mode() == 2  # FULL: every commit fsyncs the WAL
    ob.close()
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    ob = make(tmp_path, synchronous="NORMAL")
    assert ob.synchronous_mode() == 1
    ob.close()


def test_seq_is_allocated_in_the_storing_transaction_and_survives_reopen(tmp_path: Path) -> None:
    ob = make(tmp_path)
    assert ob.append_readings([reading] * 3, now_ms=NOW) == [0, 1, 2]

    def broken(seq: int) -> tuple[str, bytes]:
        raise RuntimeError("encode failed")

    with pytest.raises(RuntimeError):
        ob.append_readings([reading, broken], now_ms=NOW)
    # The failed transaction consumed no seq and stored nothing.
    assert ob.stats().next_seq == 3 and ob.stats().depth == 3
    ob.close()
    ob = make(tmp_path)
    assert ob.append_readings([reading], now_ms=NOW) == [3]
    ob.close()


def test_ack_deletes_and_a_restart_replays_the_rest_in_seq_order(tmp_path: Path) -> None:
    ob = make(tmp_path)
    ob.append_readings([reading] * 5, now_ms=NOW)
    rows = ob.next_batch(3)
    assert [r.seq for r in rows] == [0, 1, 2]
    assert [r.seq for r in ob.next_batch(10)] == [3, 4]  # not handed out twice
    ob.ack([rows[0].id, rows[2].id])
    ob.close()
    ob = make(tmp_path)  # a new process: everything not acknowledged goes out again
    assert [r.seq for r in ob.next_batch(10)] == [1, 3, 4]
    assert ob.stats().depth == 3
    ob.close()


def test_read_only_view_of_seqs_allocated_and_pending(tmp_path: Path) -> None:
    """What accounting reads from an agent's outbox file, while the agent writes it too."""
    path = tmp_path / "o.db"
    ob = make(tmp_path, max_rows=30, drop_batch=5)
    try:
        assert (read_next_seq(path), read_pending_seqs(path)) == (0, set())
        ob.append_readings([reading] * 5, now_ms=NOW)
        rows = ob.next_batch(2)
        ob.ack([r.id for r in rows], defer=True)  # not deleted yet: still pending
        assert (read_next_seq(path), read_pending_seqs(path)) == (5, {0, 1, 2, 3, 4})
        ob.flush_acks()
        ob.append("alert", "t/alert", b"a", now_ms=NOW)  # no seq: not a reading
        assert (read_next_seq(path), read_pending_seqs(path)) == (5, {2, 3, 4})
        ob.append_readings([reading] * 30, now_ms=NOW)  # over the bound: the oldest dropped
        pending = read_pending_seqs(path)
        assert read_next_seq(path) == 35 and len(pending) < 33 and 34 in pending
        assert not set(range(2, 7)) & pending  # dropped (a Gap covers them): not pending
    finally:
        ob.close()
    mtime = path.stat().st_mtime_ns
    assert read_next_seq(path) == 35 and read_pending_seqs(path) == pending
    assert path.stat().st_mtime_ns == mtime  # only read
    with pytest.raises(sqlite3.OperationalError):
        read_next_seq(tmp_path / "missing.db")  # never creates one


def gaps_of(ob: Outbox) -> list[Gap]:
    return [decode_as(r.payload, Gap, now_ms=NOW) for r in ob.next_batch(10_000) if r.kind == "gap"]


def test_overflow_drops_oldest_and_records_the_exact_gap(tmp_path: Path) -> None:
    ob = make(tmp_path, max_rows=10, drop_batch=3)
    inflight = ob.next_batch(0)
    ob.append_readings([reading] * 2, now_ms=NOW)
    inflight = ob.next_batch(2)  # seqs 0, 1 are with the MQTT client: never dropped
    for _ in range(12):
        ob.append_readings([reading], now_ms=NOW)
    st = ob.stats()
    assert st.depth <= 10 and st.next_seq == 14
    seqs = [r.seq for r in ob.next_batch(100) if r.kind == "reading"]
    ob.close()
    ob = make(tmp_path, max_rows=10, drop_batch=3)
    gaps = gaps_of(ob)
    assert len(gaps) == 1  # coalesced while unsent
    gap = gaps[0]
    assert gap.reason is GapReason.OUTBOX_FULL
    dropped = set(range(gap.first_seq, gap.last_seq + 1))
    kept = {0, 1, *seqs}
    # Every seq ever allocated is either kept or in the gap, never both.
    assert dropped | kept == set(range(14)) and not dropped & kept
    assert gap.first_seq == 2 and ob.stats().dropped == gap.count
    assert [r.seq for r in inflight] == [0, 1]
    ob.close()


def test_a_sent_gap_is_not_extended(tmp_path: Path) -> None:
    ob = make(tmp_path, max_rows=12, drop_batch=2)
    for _ in range(15):
        ob.append_readings([reading], now_ms=NOW)
    first = [r for r in ob.next_batch(100) if r.kind == "gap"]
    assert len(first) == 1
    g1 = decode_as(first[0].payload, Gap, now_ms=NOW)
    for _ in range(20):
        ob.append_readings([reading], now_ms=NOW)
    ob.rewind()
    later = [decode_as(r.payload, Gap, now_ms=NOW) for r in ob.next_batch(1000) if r.kind == "gap"]
    assert later[0] == g1  # the one already handed out is unchanged
    assert all(g.first_seq > g1.last_seq for g in later[1:])
    ob.close()


def test_age_bound_expires_old_readings_with_a_gap(tmp_path: Path) -> None:
    clock = [NOW]
    ob = Outbox(
        tmp_path / "o.db", device_id="d1", site="s1", max_age_s=60, clock_ms=lambda: clock[0]
    )
    ob.open()
    ob.append_readings([reading] * 3, now_ms=clock[0])
    clock[0] += 61_000
    ob.append_readings([reading], now_ms=clock[0])
    gap = gaps_of(ob)[0]
    assert (gap.first_seq, gap.last_seq, gap.reason) == (0, 2, GapReason.OUTBOX_EXPIRED)
    ob.close()


def test_stats_from_another_thread_while_writing(tmp_path: Path) -> None:
    ob = make(tmp_path)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                ob.stats()
        except BaseException as exc:  # pragma: no cover - the failure we look for
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(200):
        ob.append_readings([reading], now_ms=NOW)
        ob.ack(r.id for r in ob.next_batch(5))
    t.join()
    assert not errors
    ob.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from edge_agent.outbox import Outbox
    ob = Outbox(sys.argv[1], device_id="d1", site="s1")
    ob.open()
    while True:
        seqs = ob.append_readings([lambda s: ("t", b"r%d" % s)] * 3, now_ms=1767225600000)
        # Only now, after COMMIT, is the reading "taken": report it.
        print(seqs[-1], flush=True)
    """
)


@pytest.mark.slow
def test_kill_9_loses_no_committed_reading_and_reuses_no_seq(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        last = -1
        deadline = time.monotonic() + 60
        while last < 0 or (time.monotonic() < deadline and int(last) < (_round + 1) * 300):
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
        proc.send_signal(signal.SIGKILL)  # mid-stream, mid-transaction most likely
        proc.wait()
        proc.stdout.close()
        assert last >= 0
        ob = Outbox(db, device_id="d1", site="s1")
        ob.open()
        seqs = [r.seq for r in ob.next_batch(1_000_000)]
        st = ob.stats()
        ob.close()
        # Every reported (committed) seq is there, contiguous from 0, and the
        # counter is past everything stored: the next start cannot reuse a seq.
        assert seqs == list(range(len(seqs)))
        assert seqs[-1] >= last
        assert st.next_seq == seqs[-1] + 1
