"""The agent as systemd runs it: sd_notify READY/WATCHDOG/STOPPING, SIGTERM flushes and saves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.hil

REPO = Path(__file__).resolve().parents[2]


def test_notify_watchdog_and_graceful_sigterm(
    hil: Any, broker: Any, w1_tree: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        hil.config(w1_root=root, state_dir=tmp_path / "state", port=broker.port, interval_s=0.2)
    )
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(0.2)
    got: list[str] = []

    def drain() -> None:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return

    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": notify_path}
    sub = hil.Subscriber(broker.port, "thermowatch/hil/hil-d1/telemetry")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert hil.wait_for(lambda: (drain(), "WATCHDOG=1" in got)[1], timeout=60)
        assert "READY=1" in got and got.index("READY=1") < got.index("WATCHDOG=1")
        assert hil.wait_for(lambda: len(sub.readings()) >= 10, timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode()
        drain()
        assert "STOPPING=1" in got
        log = out.decode()
        # One line per event, key=value.
        assert "event=signal signal=SIGTERM" in log
        assert "event=detector_saved" in log
        assert "event=agent_stopped backlog=0" in log
        assert (tmp_path / "state" / "detector.pickle").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
        sub.close()
