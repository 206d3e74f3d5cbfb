"""Receipts on the gateway side: the pure per-device book and the run loop with fakes.

A receipt names only seqs Kafka confirmed (never one before), every confirmed
seq of a reading or gap is named, dead letters are named nowhere, the book is
bounded (flushed early when full, nothing dropped), and ``receipts.enabled =
false`` publishes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import RetireOptions
from gateway.config import GatewayConfig, GatewaySettings, HttpSettings, ReceiptSettings
from gateway.receipts import ReceiptBook, publish_bytes
from stagekit.config import ConfigError, loads
from telemetry_contract import Receipt, decode, encode, seq_ranges
from telemetry_contract.messages import MAX_RECEIPT_RANGES
from tests.unit.test_gateway_app import incoming, reading, retiring, running, settle

# --- the pure book --------------------------------------------------------------

_adds = st.lists(
    st.tuples(
        st.sampled_from(["d1", "d2", "d3"]),
        st.integers(0, 2000),
        st.integers(0, 3),
        st.booleans(),  # take (send) after this add
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(_adds, st.integers(1, 40))
def test_receipts_cover_exactly_the_confirmed_seqs(
    adds: list[tuple[str, int, int, bool]], cap: int
) -> None:
    book = ReceiptBook(max_ranges=cap)
    confirmed: dict[str, set[int]] = {}
    receipts: list[Receipt] = []
    for device, first, extra, take in adds:
        confirmed.setdefault(device, set()).update(range(first, first + extra + 1))
        full = book.add("s1", device, first, first + extra)
        assert len(book) <= cap  # the caller flushes when told: bounded
        if full or take:
            receipts += book.take(gateway_id="gw", now_ms=1_767_225_600_000, max_ranges=4)
            assert len(book) == 0
    receipts += book.take(gateway_id="gw", now_ms=1_767_225_600_000, max_ranges=4)
    covered: dict[str, set[int]] = {}
    for r in receipts:
        assert 1 <= len(r.ranges) <= 4 and r.gateway_id == "gw" and r.site == "s1"
        assert decode(encode(r)) == r  # valid on the wire
        for first, last in r.ranges:
            covered.setdefault(r.device_id, set()).update(range(first, last + 1))
    assert covered == confirmed


def test_one_device_with_many_holes_gets_several_receipts_of_at_most_256_ranges() -> None:
    book = ReceiptBook()
    for seq in range(0, 2 * 600, 2):  # 600 separate seqs
        book.add("s1", "d1", seq, seq)
    receipts = book.take(gateway_id="gw", now_ms=1_767_225_600_000)
    assert [len(r.ranges) for r in receipts] == [MAX_RECEIPT_RANGES, MAX_RECEIPT_RANGES, 88]
    assert seq_ranges(s for r in receipts for a, b in r.ranges for s in range(a, b + 1)) == [
        (s, s) for s in range(0, 1200, 2)
    ]


def test_out_of_order_and_repeated_seqs_are_merged() -> None:
    book = ReceiptBook()
    for seq in (5, 3, 4, 4, 9, 1, 2):
        book.add("s1", "d1", seq, seq)
    (receipt,) = book.take(gateway_id="gw", now_ms=1_767_225_600_000)
    assert receipt.ranges == [(1, 5), (9, 9)]


def test_book_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="max_ranges: must be >= 1, got 0"):
        ReceiptBook(max_ranges=0)


# --- config ------------------------------------------------------------------------


def test_receipts_config_defaults_and_errors_name_the_key() -> None:
    cfg = GatewayConfig()
    assert cfg.receipts.enabled is True and 0 < cfg.receipts.interval_s < 1
    off = loads(GatewayConfig, "[receipts]\nenabled = false\n")
    assert off.receipts.enabled is False
    env = loads(GatewayConfig, "", env={"TW__RECEIPTS__ENABLED": "false"}, env_prefix="TW")
    assert env.receipts.enabled is False
    with pytest.raises(ConfigError, match=r"receipts\.interval_s: must be greater than 0"):
        loads(GatewayConfig, "[receipts]\ninterval_s = 0\n")
    with pytest.raises(ConfigError, match=r"receipts\.enabled: must be a boolean"):
        loads(GatewayConfig, '[receipts]\nenabled = "yes"\n')
    with pytest.raises(ConfigError, match=r"receipts\.max_pending_ranges: must be at least 1"):
        loads(GatewayConfig, "[receipts]\nmax_pending_ranges = 0\n")
    unknown = r"receipts\.interval \(from TW__RECEIPTS__INTERVAL\): unknown key"
    with pytest.raises(ConfigError, match=unknown):
        loads(GatewayConfig, "", env={"TW__RECEIPTS__INTERVAL": "1"}, env_prefix="TW")


# --- the run loop with fakes ---------------------------------------------------------


def cfg(**receipts: Any) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySettings(id="gw-t", shutdown_grace_s=0),
        receipts=ReceiptSettings(**{"interval_s": 0.01, **receipts}),
        http=HttpSettings(enabled=False),
    )


def gap(first: int, last: int) -> bytes:
    return json.dumps(
        {
            "type": "gap",
            "device_id": "d1",
            "site": "s1",
            "ts": int(time.time() * 1000),
            "first_seq": first,
            "last_seq": last,
            "reason": "outbox_full",
        }
    ).encode()


async def published_soon(mqtt: Any, count: int) -> list[Receipt]:
    for _ in range(500):
        if len(mqtt.published) >= count:
            break
        await asyncio.sleep(0.01)
    out = []
    for topic, payload in mqtt.published:
        assert topic == "thermowatch/s1/d1/receipt"
        out.append(decode(payload))
    return out


async def test_receipt_only_after_kafka_confirmed_and_only_for_what_it_confirmed() -> None:
    async with running(cfg()) as (gw, sink, mqtt):
        for mid in (1, 2, 3, 4):
            mqtt.deliver(incoming(mid, reading(mid)))
        mqtt.deliver(incoming(5, b"\x00garbage"))  # a dead letter: no seq to trust
        mqtt.deliver(incoming(6, gap(10, 14)))
        await asyncio.sleep(0.1)  # ten intervals: nothing is confirmed yet
        assert mqtt.published == []
        for index in (0, 1, 3, 4, 5):  # Kafka confirms all but seq 3
            sink.confirm(index)
        (receipt,) = await published_soon(mqtt, 1)
        assert receipt.ranges == [(1, 2), (4, 4), (10, 14)]
        assert receipt.gateway_id == "gw-t" and receipt.device_id == "d1"
        sink.confirm(2)
        receipts = await published_soon(mqtt, 2)
        assert receipts[1].ranges == [(3, 3)]
        assert gw.metrics.receipts_sent._value.get() == 2
        assert gw.metrics.receipt_bytes._value.get() == sum(
            publish_bytes(t, p) for t, p in mqtt.published
        )


async def test_kafka_outage_no_receipt_until_kafka_confirms() -> None:
    async with running(cfg()) as (gw, sink, mqtt):
        sink.healthy = False  # Kafka down: the sink confirms nothing
        for mid in range(1, 21):
            mqtt.deliver(incoming(mid, reading(mid)))
        await asyncio.sleep(0.1)
        assert mqtt.published == [] and gw.in_flight == 20
        sink.healthy = True  # back: the retried writes complete
        for index in range(20):
            sink.confirm(index)
        (receipt,) = await published_soon(mqtt, 1)
        assert receipt.ranges == [(1, 20)]


async def test_full_book_is_sent_at_once_not_dropped() -> None:
    async with running(cfg(interval_s=10.0, max_pending_ranges=2)) as (_gw, sink, mqtt):
        for mid, seq in enumerate((1, 3, 5, 7), start=1):
            mqtt.deliver(incoming(mid, reading(seq)))
        sink.confirm(0)
        sink.confirm(1)  # two ranges held: full, sent now (not after 10 s)
        assert [decode(p).ranges for _t, p in mqtt.published] == [[(1, 1), (3, 3)]]
        sink.confirm(2)
        assert len(mqtt.published) == 1  # one range held: waits for the interval
    # Stopping the gateway sends what is held.
    assert [decode(p).ranges for _t, p in mqtt.published] == [[(1, 1), (3, 3)], [(5, 5)]]


async def test_receipts_disabled_publish_nothing() -> None:
    async with running(cfg(enabled=False)) as (gw, sink, mqtt):
        for mid in (1, 2, 3):
            mqtt.deliver(incoming(mid, reading(mid)))
        for index in range(3):
            sink.confirm(index)
        await settle()
        await asyncio.sleep(0.1)
        assert mqtt.acked == [1, 2, 3]
    assert mqtt.published == []
    assert gw.metrics.receipts_sent._value.get() == 0


async def test_receipts_while_mqtt_is_down_are_not_kept() -> None:
    async with running(cfg()) as (gw, sink, mqtt):
        mqtt.deliver(incoming(1, reading(1)))
        mqtt.connected = False
        sink.confirm(0)
        await asyncio.sleep(0.1)
        assert mqtt.published == [] and gw.metrics.receipts_sent._value.get() == 0
        mqtt.connect(2)
        mqtt.deliver(incoming(1, reading(1), connection=2))  # the broker re-sends it
        sink.confirm(1)
        (receipt,) = await published_soon(mqtt, 1)
        assert receipt.ranges == [(1, 1)]


# --- the shipped broker ACLs -----------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
ACLS = [REPO / "deploy/local/mosquitto-acl.conf", REPO / "deploy/docker/mosquitto/acl.conf"]


@pytest.mark.parametrize("path", ACLS, ids=lambda p: p.parent.name)
def test_every_shipped_acl_lets_the_gateway_write_receipts_and_a_device_read_its_own(
    path: Path,
) -> None:
    from deploy.local.mqtt_auth import acl_text

    text = path.read_text()
    device = "pattern"  # compose: one pattern for every device (%u)
    if path.parent.name == "local":  # rendered with one block per device
        text, device = acl_text(text, {"d1": "p"}, {}), "d1"
    rules: dict[str, list[str]] = {}
    user = "pattern"
    for raw in text.splitlines():
        line = raw.strip()  # comments are whole lines ("#" is also a topic wildcard)
        if line.startswith("user "):
            user = line.split()[1]
        elif line.startswith(("topic ", "pattern ")):
            key = "pattern" if line.startswith("pattern ") else user
            rules.setdefault(key, []).append(line.split(" ", 1)[1].replace("%u", "d1"))
    assert rules["gateway"] == ["read thermowatch/#", "write thermowatch/+/+/receipt"]
    # Nothing else widened: devices still read only their config and receipts.
    assert [r for r in rules[device] if r.startswith("read")] == [
        "read thermowatch/+/d1/config",
        "read thermowatch/+/d1/receipt",
    ]


async def test_a_retiring_gateway_confirms_what_it_forwards_from_the_session() -> None:
    gw, sink, mqtt, task = await retiring(cfg(), RetireOptions(idle_s=0.2, timeout_s=30))
    mqtt.deliver(incoming(1, reading(41)))
    mqtt.deliver(incoming(2, reading(42)))
    sink.confirm(0)
    sink.confirm(1)
    assert await asyncio.wait_for(task, 10) == 0 and gw.session_ended
    assert [decode(p).ranges for _t, p in mqtt.published] == [[(41, 42)]]
