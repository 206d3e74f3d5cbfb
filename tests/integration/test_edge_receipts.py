"""Edge receipts against the shared local stack's Mosquitto, the test acting as the gateway.

The agent (fixture w1 tree: two probes) publishes telemetry; the test reads it and
publishes :class:`~telemetry_contract.Receipt` messages for some seqs only, at QoS 0
on the device's receipt topic, as the gateway does once Kafka has them. The outbox
must keep exactly the unreceipted readings and send them again: when a receipt is
overdue, and after a restart (a new connection).

The agent logs in as ``admin``: the device ACL that lets a device read its own
receipt topic ships with the gateway's side of receipts; this test is about the
agent, on any broker ACL.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.outbox import read_pending_seqs
from telemetry_contract import Reading, Receipt, encode
from telemetry_contract.receipts import seq_ranges
from tests.integration.test_edge_stack import Admin, wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
DEVICE = "dev-test-3"


class Gateway(Admin):
    """Reads the device's telemetry and sends receipts (QoS 0, like the gateway)."""

    def seqs(self) -> list[int]:
        return [r.seq for r in self.of("telemetry") if isinstance(r, Reading)]

    def receipt(self, site: str, seqs: list[int]) -> None:
        payload = encode(
            Receipt(
                device_id=DEVICE,
                site=site,
                ts=int(time.time() * 1000),
                ranges=seq_ranges(seqs),
                gateway_id="test",
            )
        )
        self.c.publish(f"thermowatch/{site}/{DEVICE}/receipt", payload, qos=0)


def run_agent(cfg_text: str) -> tuple[EdgeAgent, threading.Event, threading.Thread]:
    agent = EdgeAgent(loads_config(cfg_text), pin_factory=MockFactory())
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    agent.start()
    thread.start()
    return agent, stop, thread


def stop_agent(agent: EdgeAgent, stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    if thread.is_alive():
        thread.join(30)
    agent.shutdown()


def test_outbox_keeps_exactly_the_unreceipted_readings_and_sends_them_again(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    mq = stack["mosquitto"]
    site = f"it{uuid.uuid4().hex[:8]}"
    base = f"thermowatch/{site}/{DEVICE}"
    root = tmp_path / "w1"
    shutil.copytree(FIXTURES / "ok", root)
    state = tmp_path / "state"

    def config(*, timeout_s: float, interval_s: float) -> str:
        return f"""
[device]
device_id = "{DEVICE}"
site = "{site}"
state_dir = "{state}"
[sensors]
w1_root = "{root}"
[sampling]
interval_s = {interval_s}
[gpio]
pin_factory = "mock"
[outbox]
flush_timeout_s = 1.0
receipts = true
receipt_timeout_s = {timeout_s}
resend_max_s = {timeout_s * 2}
[mqtt]
host = "{mq["host"]}"
port = {mq["port"]}
username = "admin"
password = "{mq["users"]["admin"]}"
client_id = "tw-edge-{DEVICE}-{site}"
session_expiry_s = 60
"""

    gw = Gateway(mq["host"], mq["port"], mq["users"]["admin"], f"{base}/telemetry")
    outbox = state / "outbox.sqlite3"
    agent, stop, thread = run_agent(config(timeout_s=2.0, interval_s=0.2))
    try:
        assert wait_for(lambda: len(set(gw.seqs())) >= 20, timeout=60)
        first = sorted(set(gw.seqs()))[:20]
        assert first == list(range(20))
        even = [s for s in first if s % 2 == 0]
        odd = [s for s in first if s % 2 == 1]
        gw.receipt(site, even)
        # The outbox keeps exactly the unreceipted ones of those 20 (PUBACKed, awaiting).
        assert wait_for(lambda: read_pending_seqs(outbox) & set(first) == set(odd), timeout=30)
        assert agent.receipts_applied >= 1 and agent.receipts_rejected == 0
        # Overdue (2 s): the unreceipted ones are sent again; the receipted ones are gone.
        seen = len(gw.seqs())
        assert wait_for(lambda: agent.overdue_resends >= 1, timeout=30)
        assert wait_for(lambda: set(odd) <= set(gw.seqs()[seen:]), timeout=30)
        assert not set(even) & set(gw.seqs()[seen:])
    finally:
        stop_agent(agent, stop, thread)

    # A new process (a new connection), no overdue: everything stored is sent on connect.
    pending = read_pending_seqs(outbox)
    assert set(odd) <= pending and not set(even) & pending
    seen = len(gw.seqs())
    agent, stop, thread = run_agent(config(timeout_s=3600.0, interval_s=1.0))
    try:
        assert wait_for(lambda: pending <= set(gw.seqs()[seen:]), timeout=30)
        again = set(gw.seqs()[seen:])
        assert not set(even) & again
        assert agent.overdue_resends == 0
        applied = agent.receipts_applied
        gw.receipt(site, sorted(again))
        assert wait_for(lambda: agent.receipts_applied > applied, timeout=30), (
            agent.receipts_rejected
        )
        left = read_pending_seqs(outbox) & again
        assert wait_for(lambda: not read_pending_seqs(outbox) & again, timeout=30), (
            sorted(left),
            sorted(again),
        )
    finally:
        stop_agent(agent, stop, thread)
        gw.publish(f"{base}/status", b"")
        gw.close()
