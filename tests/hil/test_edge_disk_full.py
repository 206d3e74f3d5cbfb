"""A genuinely full file system under a running agent: it goes on, then sends the exact Gap.

The agent's state directory is a small tmpfs of its own; a filler file takes
every free block, so SQLite's next WAL write fails with ENOSPC (SQLITE_FULL)
as on a full SD card. Needs root (mount); skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testsupport.prerequisites import require

pytestmark = pytest.mark.hil


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    require(os.geteuid() == 0, "root, to mount a size-limited tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    require(done.returncode == 0, f"a tmpfs mount: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Take every free block of the file system holding ``directory``."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):  # ENOSPC: on to a smaller chunk
                while os.write(fd, chunk):
                    pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_no_exit_then_a_gap_with_the_exact_range_through_mosquitto(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, small_fs: Path
) -> None:
    root = w1_tree("ok")
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    try:
        ra = run_agent(
            hil.config(w1_root=root, state_dir=small_fs, port=broker.port, interval_s=0.1)
        )
        agent = ra.agent
        assert hil.wait_for(lambda: len(sub.readings()) >= 10)
        filler = fill(small_fs)
        assert hil.wait_for(lambda: agent.outbox.unstored_readings >= 20, timeout=30)
        assert ra.thread.is_alive()  # no crash: the loop goes on while nothing can be stored
        assert hil.wait_for(
            lambda: any(
                m.reason.startswith("disk_full") for m, _ in sub.of_kind("status") if m is not None
            ),
            timeout=10,
        ), "the online status says the disk is full"
        filler.unlink()  # space returns
        assert hil.wait_for(
            lambda: any(type(m).__name__ == "Gap" for m, _ in sub.of_kind("telemetry")), timeout=30
        )
        n = len(sub.readings())
        assert hil.wait_for(lambda: len(sub.readings()) >= n + 10)  # and readings flow again
        assert ra.thread.is_alive() and not agent.outbox.disk_full
        gaps = [m for m, _ in sub.of_kind("telemetry") if type(m).__name__ == "Gap"]
        assert len(gaps) == 1 and gaps[0].reason.value == "disk_full"
        gap = gaps[0]
        got = {m.seq for m, _ in sub.readings()}
        lost = set(range(gap.first_seq, gap.last_seq + 1))
        # Exactly the seqs never delivered: every seq up to the newest is one or the other.
        assert not got & lost
        assert got | lost == set(range(max(got) + 1))
        assert gap.count == agent.outbox.unstored_readings
        assert hil.wait_for(
            lambda: any(m.reason == "" for m, _ in sub.of_kind("status")[-1:] if m is not None),
            timeout=10,
        ), "the online status is clear again"
    finally:
        sub.close()


def test_fill_really_fills(small_fs: Path) -> None:
    filler = fill(small_fs)
    with pytest.raises(OSError) as info, open(small_fs / "x", "wb") as f:
        f.write(b"\0" * 8192)
        f.flush()
        os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC
    filler.unlink()


def test_agent_starting_on_a_full_disk_runs_and_gaps_what_it_could_not_store(
    hil: Any, w1_tree: Any, small_fs: Path
) -> None:
    from gpiozero.pins.mock import MockFactory

    from edge_agent.app import EdgeAgent
    from edge_agent.config import loads_config
    from edge_agent.sensors import Sample
    from telemetry_contract import Gap, GapReason, Quality, Reading, decode

    text = hil.config(w1_root=w1_tree("ok"), state_dir=small_fs, port=1)
    now = 1_767_225_600_000
    first = EdgeAgent(loads_config(text), pin_factory=MockFactory())
    first.start(mqtt=False)
    assert first.handle_samples([Sample("28-0316a2791aff", now, 4.0, Quality.OK)]) == [0]
    first.shutdown()
    filler = fill(small_fs)  # full before the next start: SQLite cannot even open
    a = EdgeAgent(loads_config(text), pin_factory=MockFactory())
    a.start(mqtt=False)  # no exit: systemd would restart it in a loop
    try:
        for i in range(5):
            assert a.handle_samples([Sample("28-0316a2791aff", now + i, 4.0, Quality.OK)]) == []
            a.process_events(0.0)
        assert a.outbox.disk_full and a.outbox.unstored_readings == 5
        assert a.presence.reason.startswith("disk_full")
        a.save_detector()  # logged, and no half-written file left holding space
        assert not list(small_fs.glob("*.tmp"))
        filler.unlink()
        assert a.handle_samples([Sample("28-0316a2791aff", now + 9, 4.0, Quality.OK)]) == [6]
        msgs = [decode(r.payload) for r in a.outbox.next_batch(100)]
        gaps = [(m.first_seq, m.last_seq, m.reason) for m in msgs if isinstance(m, Gap)]
        assert gaps == [(1, 5, GapReason.DISK_FULL)]
        assert [m.seq for m in msgs if isinstance(m, Reading)] == [0, 6]
    finally:
        a.shutdown()
