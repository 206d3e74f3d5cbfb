"""Edge receipts through a real (private) Mosquitto, the test acting as the gateway.

The agent (fake w1 tree: two probes) publishes telemetry; the test reads it and
publishes :class:`~telemetry_contract.Receipt` messages for some seqs only, at QoS 0
on the device's receipt topic, as the gateway does once Kafka has them. The outbox
must keep exactly the unreceipted readings and send them again: when a receipt is
overdue, and after a restart (a new connection).

A private broker, not the shared stack's: a gateway running there would receipt
this device's readings too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.outbox import read_pending_seqs
from telemetry_contract import Receipt, encode
from telemetry_contract.receipts import seq_ranges

pytestmark = pytest.mark.hil

BASE = "thermowatch/hil/hil-d1"


def receipt(sub: Any, seqs: list[int]) -> None:
    """What the gateway sends once Kafka has ``seqs``."""
    payload = encode(
        Receipt(
            device_id="hil-d1",
            site="hil",
            ts=int(time.time() * 1000),
            ranges=seq_ranges(seqs),
            gateway_id="test",
        )
    )
    sub.client.publish(f"{BASE}/receipt", payload, qos=0)


def test_outbox_keeps_exactly_the_unreceipted_readings_and_sends_them_again(
    hil: Any, broker: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    root = w1_tree("ok")
    state = tmp_path / "state"

    def config(*, timeout_s: float, interval_s: float) -> str:
        text = hil.config(w1_root=root, state_dir=state, port=broker.port, interval_s=interval_s)
        on = f"receipts = true\nreceipt_timeout_s = {timeout_s}\nresend_max_s = {timeout_s * 2}"
        return str(text.replace("receipts = false", on))

    def seqs() -> list[int]:
        return [r.seq for r, _ in sub.readings()]

    sub = hil.Subscriber(broker.port, f"{BASE}/telemetry")
    outbox = state / "outbox.sqlite3"
    try:
        ra = run_agent(config(timeout_s=2.0, interval_s=0.2))
        agent = ra.agent
        assert hil.wait_for(lambda: len(set(seqs())) >= 20, timeout=60)
        first = sorted(set(seqs()))[:20]
        assert first == list(range(20))
        even = [s for s in first if s % 2 == 0]
        odd = [s for s in first if s % 2 == 1]
        receipt(sub, even)
        # The outbox keeps exactly the unreceipted ones of those 20 (PUBACKed, awaiting).
        assert hil.wait_for(lambda: read_pending_seqs(outbox) & set(first) == set(odd), timeout=30)
        assert agent.receipts_applied == 1 and agent.receipts_rejected == 0
        # Overdue (2 s): the unreceipted ones are sent again; the receipted ones are gone.
        seen, resends = len(seqs()), agent.overdue_resends
        assert hil.wait_for(lambda: agent.overdue_resends > resends, timeout=30)
        assert hil.wait_for(lambda: set(odd) <= set(seqs()[seen:]), timeout=30)
        assert not set(even) & set(seqs()[seen:])
        ra.stop()

        # A new process (a new connection), no overdue: everything stored is sent on connect.
        pending = read_pending_seqs(outbox)
        assert set(odd) <= pending and not set(even) & pending
        seen = len(seqs())
        ra = run_agent(config(timeout_s=3600.0, interval_s=1.0))
        assert hil.wait_for(lambda: pending <= set(seqs()[seen:]), timeout=30)
        again = set(seqs()[seen:])
        assert not set(even) & again
        assert ra.agent.overdue_resends == 0
        receipt(sub, sorted(again))
        assert hil.wait_for(lambda: not read_pending_seqs(outbox) & again, timeout=30)
        ra.stop()
    finally:
        sub.close()
