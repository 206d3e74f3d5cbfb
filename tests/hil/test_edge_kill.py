"""kill -9 of the agent process mid-stream, then restart: nothing lost, no seq reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.hil, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def test_kill_9_mid_stream_then_restart(
    hil: Any, broker: Any, w1_tree: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        hil.config(w1_root=root, state_dir=tmp_path / "state", port=broker.port, interval_s=0.1)
    )
    log = tmp_path / "agent.log"
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/#")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for kill in range(1, 3):
            proc = spawn(cfg, log)
            procs.append(proc)
            n = len(sub.readings())
            assert hil.wait_for(lambda n=n: len(sub.readings()) >= n + 30, timeout=60), (
                log.read_text()
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # The broker publishes our last will: the offline status.
            assert hil.wait_for(
                lambda kill=kill: (
                    sum(
                        m.state.value == "offline" and m.reason == "connection lost"
                        for m, _ in sub.of_kind("status")
                    )
                    >= kill
                ),
                timeout=60,
            )
        proc = spawn(cfg, log)
        procs.append(proc)
        n = len(sub.readings())
        assert hil.wait_for(lambda: len(sub.readings()) >= n + 20, timeout=60)
        proc.send_signal(signal.SIGTERM)  # graceful: flush, save model, offline status
        assert proc.wait(60) == 0, log.read_text()
        assert hil.wait_for(
            lambda: [m for m, _ in sub.of_kind("status")][-1].reason == "shutdown", timeout=10
        )
        readings = sub.readings()
        by_seq: dict[int, bytes] = {}
        for r, raw in readings:
            # A seq seen twice is a redelivery of the same reading, never a new one.
            assert by_seq.setdefault(r.seq, raw) == raw, f"seq {r.seq} reused"
        assert sorted(by_seq) == list(range(len(by_seq))), "a seq is missing"
        # The outbox agrees: empty, and its counter is just past the last seq delivered.
        out = subprocess.run(
            [sys.executable, "-m", "edge_agent", "outbox", "-c", str(cfg), "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
        )
        import json

        stats = json.loads(out.stdout)
        assert stats["depth"] == 0 and stats["next_seq"] == len(by_seq)
        assert (tmp_path / "state" / "detector.pickle").exists()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sub.close()
