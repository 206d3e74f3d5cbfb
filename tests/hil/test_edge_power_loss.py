"""Power loss: every published reading was fsync'd first; a restart from the synced state
neither loses a published seq nor reuses one.

The fsync policy under test (edge_agent/README.md): the outbox is SQLite in WAL
mode with ``synchronous=FULL``, so each transaction (a sampling round's
readings, their seqs and the ``next_seq`` counter) is written to the WAL and
fdatasync'd before ``COMMIT`` returns, and only then are its rows handed to
MQTT. Deletes of acknowledged rows are batched and may be lost: that only
re-sends byte-identical copies of seqs the broker already has.

The agent runs under ``strace``, which (1) logs every WAL write, fdatasync and
socket send with its bytes, and (2) stops the whole process with SIGSTOP right
after its N-th fdatasync has returned - a moment at which everything the
agent has written is on disk, i.e. exactly what survives a power cut there.
The state directory is copied at that moment (without the ``-shm`` index,
which lives in memory on a real power cut), the agent is killed, and a new
agent is started on the copy.

A power cut at any other moment falls between two fdatasyncs: the disk then
holds the state of the earlier one plus part of the next transaction, which
SQLite discards on recovery (WAL frame checksums), and by (1) no reading of
that transaction has been published yet. So checking (1) over the whole run
and (2) at one sync point covers every cut point.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testsupport.prerequisites import require

pytestmark = [pytest.mark.hil, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STRACE = shutil.which("strace")
#: The fdatasync after which the power is "cut" (start-up makes a few; then one per round).
CUT_AT_SYNC = 40

_LINE = re.compile(r"^(\d+) +(\w+)\((\d+)<([^>]*)>(.*)$")
#: ``strace -f`` splits a call that another thread interrupts into ``<unfinished ...>``
#: and ``<... call resumed>``: a busy machine makes that common.
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)$")
_UNFINISHED = " <unfinished ...>"
_SEQ = re.compile(r'\\"seq\\":(\d+),')


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    return env


def _ptrace_works() -> bool:
    if STRACE is None:
        return False
    done = subprocess.run([STRACE, "-o", "/dev/null", "true"], capture_output=True, check=False)
    return done.returncode == 0


def check_publish_after_fsync(trace: str) -> tuple[int, int]:
    """Walk the strace log in order: a reading may leave on the socket only once a WAL
    write holding it has been fdatasync'd. Returns (readings sent, WAL syncs)."""
    written: set[int] = set()  # seqs in WAL writes not yet synced
    durable: set[int] = set()
    sent = syncs = 0
    pending: dict[tuple[str, str], tuple[str, str]] = {}  # (pid, call) -> (path, args so far)
    for line in trace.splitlines():
        m = _LINE.match(line)
        if m is not None and line.endswith(_UNFINISHED):
            pending[m.group(1), m.group(2)] = (m.group(4), m.group(5)[: -len(_UNFINISHED)])
            continue
        if m is not None:
            call, path, rest = m.group(2), m.group(4), m.group(5)
        else:
            r = _RESUMED.match(line)
            if r is None or (r.group(1), r.group(2)) not in pending:
                continue
            call = r.group(2)
            path, head = pending.pop((r.group(1), call))
            rest = head + r.group(3)
        if path.endswith("-wal"):
            if call in ("pwrite64", "write"):
                written.update(int(s) for s in _SEQ.findall(rest))
            elif call in ("fdatasync", "fsync") and rest.rstrip().endswith("= 0"):
                durable |= written
                written.clear()
                syncs += 1
        elif call in ("sendto", "sendmsg", "write") and path.startswith(("TCP:", "socket:")):
            for seq in (int(s) for s in _SEQ.findall(rest)):
                assert seq in durable, f"seq {seq} sent before its outbox commit was fsync'd"
                sent += 1
    return sent, syncs


def test_power_cut_after_an_fsync_then_restart_loses_and_reuses_nothing(
    hil: Any, broker: Any, w1_tree: Any, tmp_path: Path
) -> None:
    require(_ptrace_works(), "strace, and ptrace allowed (a container may forbid it)")
    assert STRACE is not None
    root = w1_tree("ok")
    state, snap = tmp_path / "state", tmp_path / "after-power-cut"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(hil.config(w1_root=root, state_dir=state, port=broker.port, interval_s=0.2))
    trace = tmp_path / "strace.log"
    log = tmp_path / "agent.log"
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(log, "ab") as out:
            traced = subprocess.Popen(
                [
                    STRACE,
                    "-f",
                    "-yy",
                    "-s",
                    "65536",
                    "-o",
                    str(trace),
                    "-e",
                    "trace=fdatasync,fsync,pwrite64,write,sendto,sendmsg",
                    "-e",
                    f"inject=fdatasync:signal=SIGSTOP:when={CUT_AT_SYNC}",
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "run",
                    "-c",
                    str(cfg),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        procs.append(traced)
        # strace prints this once the whole agent is stopped right after the sync.
        assert hil.wait_for(
            lambda: trace.exists() and "stopped by SIGSTOP" in trace.read_text(errors="replace"),
            timeout=120,
        ), log.read_text()
        # The power cut: what is on disk now survives; the in-memory -shm index does not.
        shutil.copytree(state, snap, ignore=shutil.ignore_patterns("*-shm"))
        children = Path(f"/proc/{traced.pid}/task/{traced.pid}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGKILL)
        traced.wait(30)
        # Everything the agent sent before the cut reaches the subscriber.
        time.sleep(1.0)
        before = {r.seq: raw for r, raw in sub.readings()}
        assert len(before) >= 20, log.read_text()

        sent, syncs = check_publish_after_fsync(trace.read_text(errors="replace"))
        assert syncs >= CUT_AT_SYNC - 10 and sent >= len(before)

        # The synced state knows every published seq: the counter is past them.
        cfg2 = tmp_path / "edge-after.toml"
        cfg2.write_text(hil.config(w1_root=root, state_dir=snap, port=broker.port, interval_s=0.2))
        out = subprocess.run(
            [sys.executable, "-m", "edge_agent", "outbox", "--json", "-c", str(cfg2)],
            capture_output=True,
            text=True,
            env=_env(),
            check=True,
        )
        assert json.loads(out.stdout)["next_seq"] > max(before)

        # Power back: a new agent on the surviving state.
        with open(log, "ab") as out_f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg2)],
                stdout=out_f,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        procs.append(proc)
        n = len(sub.readings())
        assert hil.wait_for(lambda: len(sub.readings()) >= n + 20, timeout=60), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
        by_seq: dict[int, bytes] = {}
        for r, raw in sub.readings():
            # A seq seen twice is a redelivery of the same reading, never a new one.
            assert by_seq.setdefault(r.seq, raw) == raw, f"seq {r.seq} reused after the cut"
        assert sorted(by_seq) == list(range(len(by_seq))), "a seq is missing after the cut"
        assert max(by_seq) > max(before)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sub.close()


def test_the_trace_check_rejects_a_publish_before_its_fsync() -> None:
    wal = "5</s/outbox.sqlite3-wal>"
    sock = "8<TCP:[127.0.0.1:1->127.0.0.1:2]>"
    write = f'7 pwrite64({wal}, "..{{\\"seq\\":3,\\"ts\\":1}}..", 4120, 0) = 4120'
    sync = f"7 fdatasync({wal}) = 0"
    send = f'7 sendto({sock}, "0..{{\\"seq\\":3,\\"ts\\":1}}", 200, 0, NULL, 0) = 200'
    assert check_publish_after_fsync("\n".join([write, sync, send])) == (1, 1)
    with pytest.raises(AssertionError, match="seq 3 sent before"):
        check_publish_after_fsync("\n".join([write, send, sync]))


def test_the_trace_check_follows_calls_another_thread_interrupted() -> None:
    wal = "5</s/outbox.sqlite3-wal>"
    sock = "8<TCP:[127.0.0.1:1->127.0.0.1:2]>"
    write = f'7 pwrite64({wal}, "..{{\\"seq\\":3,\\"ts\\":1}}..", 4120, 0 <unfinished ...>'
    other = '9 write(3<pipe:[1]>, "x", 1) = 1'
    written = "7 <... pwrite64 resumed>) = 4120"
    sync = f"7 fdatasync({wal} <unfinished ...>"
    synced = "7 <... fdatasync resumed>) = 0"
    send = f'7 sendto({sock}, "0..{{\\"seq\\":3,\\"ts\\":1}}", 200, 0, NULL, 0) = 200'
    lines = [write, other, written, sync, other, synced, send]
    assert check_publish_after_fsync("\n".join(lines)) == (1, 1)
    with pytest.raises(AssertionError, match="seq 3 sent before"):  # the sync never returned
        check_publish_after_fsync("\n".join([write, written, sync, send]))
