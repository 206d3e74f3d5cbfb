"""A full disk under the edge outbox: counted, reported, no crash, an exact ``disk_full`` Gap.

The disk is made genuinely full for SQLite with ``PRAGMA max_page_count`` on the
outbox's own connection: an insert that needs one more page fails with
SQLITE_FULL ("database or disk is full") exactly as on a full file system.
Deleting acknowledged rows frees pages, which is how space comes back here.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.errors import StorageFullError
from edge_agent.gpio import StatusLight
from edge_agent.outbox import Outbox, out_of_space
from edge_agent.sensors import Sample
from telemetry_contract import (
    DeviceStatus,
    Gap,
    GapReason,
    Quality,
    Reading,
    decode,
    decode_as,
)

NOW = 1_767_225_600_000
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
P = "28-0316a2791aff"


def reading(seq: int) -> tuple[str, bytes]:
    return "t/telemetry", b"r%d-" % seq + b"x" * 300


def fill_disk(db: sqlite3.Connection) -> None:
    """No page beyond the ones the database has now: the next growth is SQLITE_FULL."""
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.execute(f"PRAGMA max_page_count={pages}")


def conn(ob: Outbox) -> sqlite3.Connection:
    assert ob._db is not None
    return ob._db


def account(ob: Outbox) -> tuple[set[int], list[Gap]]:
    """(seqs of stored readings, gaps) of everything in the outbox, in send order."""
    ob.rewind()
    rows = ob.next_batch(100_000)
    seqs = {r.seq for r in rows if r.kind == "reading" and r.seq is not None}
    gaps = [decode_as(r.payload, Gap, now_ms=NOW) for r in rows if r.kind == "gap"]
    return seqs, gaps


def test_sqlite_full_is_recognised_and_other_errors_are_not(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="d1", site="s1")
    ob.open()
    fill_disk(conn(ob))
    with pytest.raises(StorageFullError) as info:
        for _ in range(100):
            ob.append_readings([reading] * 5, now_ms=NOW)
    assert out_of_space(info.value.__cause__)  # type: ignore[arg-type]
    assert "database or disk is full" in str(info.value)
    assert not out_of_space(sqlite3.OperationalError("no such table: x"))
    ob.close()


def test_full_disk_spends_seqs_and_a_gap_covers_exactly_them_once_space_returns(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "o.db", device_id="d1", site="s1")
    ob.open()
    ob.append_readings([reading] * 3, now_ms=NOW)
    fill_disk(conn(ob))
    stored: list[int] = [0, 1, 2]
    lost: list[int] = []
    for _ in range(200):  # fills the last pages, then every round fails
        try:
            stored += ob.append_readings([reading] * 2, now_ms=NOW)
        except StorageFullError as exc:
            lost += exc.seqs
        if len(lost) >= 10:
            break
    assert lost and ob.disk_full
    assert lost == list(range(lost[0], lost[0] + len(lost)))  # contiguous, after the stored
    assert lost[0] == stored[-1] + 1
    assert ob.unstored == (lost[0], lost[-1]) and ob.unstored_readings == len(lost)
    # An alert finds no room either: counted, dropped, no exception.
    assert ob.append("alert", "t/alert", b"a" * 2000, now_ms=NOW) is False
    assert ob.unstored_alerts == 1
    st = ob.stats()  # flushes acks and reads: fine on a full disk
    assert st.disk_full and st.unstored_readings == len(lost) and st.next_seq == lost[0]

    # Space returns: the broker acknowledged the stored readings, their rows go.
    ob.ack([r.id for r in ob.next_batch(100_000)])
    after = ob.append_readings([reading], now_ms=NOW)
    assert after == [lost[-1] + 1]  # no seq handed out twice
    assert not ob.disk_full and ob.unstored is None
    rows = ob.next_batch(10)
    assert [r.kind for r in rows] == ["gap", "reading"]  # the gap first, then the new reading
    gap = decode_as(rows[0].payload, Gap, now_ms=NOW)
    assert (gap.first_seq, gap.last_seq, gap.reason) == (lost[0], lost[-1], GapReason.DISK_FULL)
    assert gap.message == f"disk full: {len(lost)} readings could not be stored"
    st = ob.stats()
    assert st.dropped == len(lost) and st.gaps == 1 and st.next_seq == lost[-1] + 2
    ob.close()
    # The gap and the seqs survive a restart.
    ob = Outbox(tmp_path / "o.db", device_id="d1", site="s1")
    ob.open()
    seqs, gaps = account(ob)
    covered = {s for g in gaps for s in range(g.first_seq, g.last_seq + 1)}
    assert covered == set(lost) and not covered & seqs
    assert ob.append_readings([reading], now_ms=NOW) == [lost[-1] + 2]
    ob.close()


def test_every_seq_is_stored_or_in_exactly_one_gap_across_full_disk_and_bounds(
    tmp_path: Path,
) -> None:
    """Size-bound drops spanning a disk_full gap make one gap per contiguous run."""
    ob = Outbox(tmp_path / "o.db", device_id="d1", site="s1", max_rows=12, drop_batch=4)
    ob.open()
    db = conn(ob)
    for round_ in range(6):
        for _ in range(40):
            try:
                ob.append_readings([reading] * 3, now_ms=NOW)
            except StorageFullError:
                break
            if round_ % 2 == 0:
                fill_disk(db)
        db.execute("PRAGMA max_page_count=1073741823")  # space returns
        ob.append_readings([reading], now_ms=NOW)
    next_seq = ob.stats().next_seq
    seqs, gaps = account(ob)
    assert {g.reason for g in gaps} == {GapReason.DISK_FULL, GapReason.OUTBOX_FULL}
    covered: set[int] = set()
    for g in gaps:
        rng = set(range(g.first_seq, g.last_seq + 1))
        assert not rng & covered, "a seq in two gaps"
        covered |= rng
    assert not covered & seqs, "a seq stored and in a gap"
    assert covered | seqs == set(range(next_seq)), "a seq neither stored nor in a gap"
    assert ob.stats().dropped == len(covered)
    ob.close()


def agent(tmp_path: Path) -> EdgeAgent:
    shutil.copytree(FIXTURES / "ok", tmp_path / "w1")
    cfg = loads_config(
        f'[device]\ndevice_id = "d1"\nsite = "s1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[sensors]\nw1_root = "{tmp_path / "w1"}"\n[gpio]\npin_factory = "mock"\n'
        '[detector]\nname = "zscore"\n[detector.params]\nwarmup = 3\n'
    )
    a = EdgeAgent(cfg, pin_factory=MockFactory(), clock_ms=lambda: NOW)
    a.start(mqtt=False)
    return a


def test_agent_keeps_running_reports_the_full_disk_and_sends_the_gap_after(
    tmp_path: Path,
) -> None:
    a = agent(tmp_path)
    try:
        for i in range(5):
            a.handle_samples([Sample(P, NOW + i, 4.0 + 0.01 * i, Quality.OK)])
        fill_disk(conn(a.outbox))
        lost_rounds = 0
        for i in range(5, 200):
            a.handle_samples([Sample(P, NOW + i, 4.0 + 0.01 * (i % 3), Quality.OK)])
            a.process_events(0.0)  # the loop's step that reports the condition
            lost_rounds += a.outbox.disk_full
            if lost_rounds >= 7:
                break
        # An anomaly while full: the local alarm sounds, the alert is counted, not stored.
        a.handle_samples([Sample(P, NOW + 300, 40.0, Quality.OK)])
        assert a.outputs.alarm_led.value == 1
        assert a.outbox.disk_full and a.outbox.unstored_readings == 8
        assert a.outbox.unstored_alerts == 0  # its reading had no seq: the alert was not tried
        online = decode(a.presence.online_of_connection(), now_ms=NOW)
        assert isinstance(online, DeviceStatus) and online.reason.startswith("disk_full")
        a._update_status_light()
        assert a.outputs.status is StatusLight.FAULT
        first, last = a.outbox.unstored or (0, -1)

        a.outbox.ack([r.id for r in a.outbox.next_batch(100_000)])  # PUBACKs free the room
        seqs = a.handle_samples([Sample(P, NOW + 400, 4.0, Quality.OK)])
        a.process_events(0.0)
        assert seqs == [last + 1]
        assert not a.outbox.disk_full and a.presence.reason == ""
        msgs = [decode(r.payload, now_ms=NOW) for r in a.outbox.next_batch(100)]
        gaps = [m for m in msgs if isinstance(m, Gap)]
        assert [(g.first_seq, g.last_seq, g.reason) for g in gaps] == [
            (first, last, GapReason.DISK_FULL)
        ]
        assert [m.seq for m in msgs if isinstance(m, Reading)] == [last + 1]
        assert last - first + 1 == 8
    finally:
        a.shutdown()
