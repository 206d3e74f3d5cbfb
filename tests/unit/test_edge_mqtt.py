"""MQTT adapter pieces that need no broker: backoff, in-flight window, refused PUBACKs."""

from __future__ import annotations

import collections
import queue
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app import EdgeAgent
from edge_agent.config import MqttSettings, loads_config
from edge_agent.mqtt import Acked, MqttLink, _Client, decode_puback
from edge_agent.sensors import Sample
from telemetry_contract import Quality, Reading, decode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"


def test_reconnect_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    link = MqttLink(
        MqttSettings(reconnect_min_s=1.0, reconnect_max_s=30.0),
        client_id="c",
        password="",
        status_topic="s",
        config_topic="c",
        will_payload=b"",
        events=queue.Queue(),
        rng=random.Random(7),
    )
    delays = [link.reconnect_backoff.next() for _ in range(12)]
    assert all(1 <= d <= 30 for d in delays)
    assert delays[0] <= 2  # first attempts stay short
    assert len(set(delays[5:])) > 1  # jitter: not the same wait for every device
    assert max(delays) > 5  # grows


class FakeLink:
    """Stands in for MqttLink: records publishes, acknowledges on demand."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.mid = 0
        self.acks: collections.deque[Acked] = collections.deque()
        self.wake_on_ack = True

    def start(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        self.mid += 1
        self.sent.append((self.mid, payload))
        return self.mid

    def set_online_payload(self, payload: bytes) -> None:
        pass

    def socket_fds(self) -> tuple[list[int], list[int]]:
        return [], []

    def service(self) -> None:
        pass

    def stop(self, *a: Any, **k: Any) -> None:
        pass


def agent_on_fake_link(
    tmp_path: Path, mqtt: str = "", *, outbox: str = "receipts = false"
) -> tuple[EdgeAgent, FakeLink]:
    """A started agent (fixture w1 tree, mock pins) whose MQTT link is a FakeLink.

    Receipts off by default: these tests pin down delete-on-PUBACK, which
    ``outbox.receipts = false`` keeps exactly (tests/unit/test_edge_receipts.py
    has the receipts side).
    """
    shutil.copytree(FIXTURES / "ok", tmp_path / "w1")
    cfg = loads_config(
        f'[device]\nstate_dir = "{tmp_path / "s"}"\n[sensors]\nw1_root = "{tmp_path / "w1"}"\n'
        f'[gpio]\npin_factory = "mock"\n[outbox]\n{outbox}\n[mqtt]\nmax_inflight = 4\n{mqtt}'
    )
    link = FakeLink()
    agent = EdgeAgent(cfg, pin_factory=MockFactory(), link=link)
    agent.start()
    return agent, link


def test_in_flight_window_is_bounded_and_puback_deletes(tmp_path: Path) -> None:
    agent, link = agent_on_fake_link(tmp_path)
    try:
        for i in range(10):
            agent.handle_samples(
                [Sample("28-0316a2791aff", 1_767_225_600_000 + i, 4.0, Quality.OK)]
            )
        assert agent.pump() == 4 and agent.pump() == 0  # window full
        assert len(link.sent) == 4
        for mid, _ in link.sent[:2]:
            agent.events.put(Acked(mid, True, "Success"))
        agent.process_events(0.1)
        assert agent.pump() == 2 and len(link.sent) == 6
        assert agent.outbox.stats().depth == 8  # 2 acknowledged rows deleted
    finally:
        agent.link = None
        agent.shutdown()


class FakeReason:
    def __init__(self, value: int, name: str) -> None:
        self.value = value
        self.is_failure = value >= 0x80
        self._name = name

    def __str__(self) -> str:
        return self._name


class FakePahoClient:
    """The part of paho's Client that MqttLink.publish uses."""

    def __init__(self) -> None:
        self.mid = 0

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        self.mid += 1
        info = type("Info", (), {})()
        info.rc = 0
        info.mid = self.mid
        return info


def test_pubacks_collect_in_a_deque_in_order_without_events() -> None:
    """paho's callbacks run on the agent's own thread: a PUBACK is a deque entry, no wake-up."""
    events: queue.Queue[Any] = queue.Queue()
    link = MqttLink(
        MqttSettings(),
        client_id="c",
        password="",
        status_topic="s",
        config_topic="c",
        will_payload=b"",
        events=events,
    )
    link._client = FakePahoClient()  # type: ignore[assignment]
    mids = [link.publish("t", b"x") for _ in range(3)]
    ok = FakeReason(0, "Success")
    for mid in mids:
        link._on_publish(None, None, mid, ok, None)  # type: ignore[arg-type]
    assert events.empty() and [a.mid for a in link.acks] == mids
    # A refusal carries its reason code.
    mid = link.publish("t", b"x")
    link._on_publish(None, None, mid, FakeReason(135, "Not authorized"), None)  # type: ignore[arg-type]
    refused = link.acks[-1]
    assert (refused.mid, refused.ok, refused.code, refused.reason) == (
        mid,
        False,
        135,
        "Not authorized",
    )
    link._client = None


class FakeSocket:
    """A non-blocking socket holding ``data`` for one recv, then nothing."""

    def __init__(self, data: bytes) -> None:
        self.chunks = [data]
        self.recvs = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)[:n]


def test_one_recv_serves_a_burst_of_pubacks_through_pahos_reader() -> None:
    got: list[int] = []
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    client.on_publish = lambda _c, _u, mid, _rc, _p: got.append(mid)
    mids = [client.publish("t/x", b"1", qos=1).mid for _ in range(3)]
    burst = b"".join(bytes([0x40, 2, 0, m]) for m in mids)  # three PUBACKs
    sock = FakeSocket(burst)
    client._sock = sock  # type: ignore[assignment]
    try:
        assert client.loop_read() == 0
        assert got == mids and not client.buffered()
        assert sock.recvs == 1  # paho alone: 9 (command, length and body of each)
        # Bytes beyond what paho asked for wait in the buffer, in order.
        sock.chunks = [b"abcdef"]
        assert client._sock_recv(2) == b"ab" and client.buffered()
        assert client._sock_recv(10) == b"cdef" and not client.buffered()
        with pytest.raises(BlockingIOError):
            client._sock_recv(1)
        sock.chunks = [b"xyz"]
        client._sock_recv(1)
        sock.close = lambda: None  # type: ignore[attr-defined]
        client._sock_close()  # a new connection starts with no stale bytes
        assert not client.buffered() and client.socket() is None
    finally:
        client._sock = None


def seqs_of(payloads: list[tuple[int, bytes]]) -> list[int]:
    out = []
    for _, raw in payloads:
        msg = decode(raw)
        assert isinstance(msg, Reading)
        out.append(msg.seq)
    return out


def test_refused_puback_keeps_the_row_backs_off_and_resends_in_seq_order(
    tmp_path: Path, caplog: Any
) -> None:
    agent, link = agent_on_fake_link(tmp_path, "reconnect_min_s = 1.0\nreconnect_max_s = 2.0\n")
    not_authorized = "Not authorized"
    try:
        for i in range(6):
            agent.handle_samples(
                [Sample("28-0316a2791aff", 1_767_225_600_000 + i, 4.0, Quality.OK)]
            )
        assert agent.pump() == 4
        first = list(link.sent)
        assert seqs_of(first) == [0, 1, 2, 3]
        # seq 0 accepted, seq 1 refused (135), seqs 2-3 still in flight.
        link.acks.append(Acked(first[0][0], True, "Success"))
        link.acks.append(Acked(first[1][0], False, not_authorized, 135))
        with caplog.at_level("WARNING", logger="edge_agent.publisher"):
            agent.process_events(0.0)
            assert agent.pump() == 0  # paused: backoff, and 2 PUBACKs still due
            link.acks.append(Acked(first[2][0], False, not_authorized, 135))
            link.acks.append(Acked(first[3][0], True, "Success"))
            agent.process_events(0.0)
        refusals = [r for r in caplog.records if "event=publish_refused" in r.getMessage()]
        assert len(refusals) == 1 and "code=135" in refusals[0].getMessage()  # logged once
        assert agent.publish_refusals == 2
        assert agent.publisher.retry_s == 1.0  # one failed attempt: backoff doubles per attempt
        stats = agent.outbox.stats()
        assert stats.depth == 4  # seqs 1, 2 (refused) and 4, 5 (unsent): nothing deleted
        assert agent.pump() == 0  # still backing off
        deadline = time.monotonic() + 10
        while agent.pump() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Resent from the first refused row, in seq order; seq 3 (acknowledged) is not.
        assert seqs_of(link.sent[4:]) == [1, 2, 4, 5]
        for mid, _ in link.sent[4:]:
            link.acks.append(Acked(mid, True, "Success"))
        with caplog.at_level("INFO", logger="edge_agent.publisher"):
            agent.process_events(0.0)
        assert any("event=publish_accepted_again" in r.getMessage() for r in caplog.records)
        assert agent.outbox.stats().depth == 0
    finally:
        agent.link = None
        agent.shutdown()


@pytest.mark.parametrize("resend", [True, False])
def test_unrouted_reading_is_kept_and_sent_again_unless_configured_off(
    tmp_path: Path, caplog: Any, resend: bool
) -> None:
    """PUBACK 16 "No matching subscribers": the broker dropped it; keep the row (default)."""
    agent, link = agent_on_fake_link(
        tmp_path, f"reconnect_min_s = 0.1\nresend_unrouted = {str(resend).lower()}\n"
    )
    try:
        for i in range(3):
            agent.handle_samples(
                [Sample("28-0316a2791aff", 1_767_225_600_000 + i, 4.0, Quality.OK)]
            )
        assert agent.pump() == 3
        for mid, _ in link.sent:
            link.acks.append(Acked(mid, True, "No matching subscribers", 16))
        with caplog.at_level("WARNING", logger="edge_agent.publisher"):
            agent.process_events(0.0)
        unrouted = [r for r in caplog.records if "event=publish_unrouted" in r.getMessage()]
        if not resend:
            assert agent.outbox.stats().depth == 0 and not unrouted  # gone, as before
            return
        assert len(unrouted) == 1 and agent.outbox.stats().depth == 3
        deadline = time.monotonic() + 10
        while agent.pump() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seqs_of(link.sent[3:]) == [0, 1, 2]  # sent again, in seq order
        for mid, _ in link.sent[3:]:
            link.acks.append(Acked(mid, True, "Success", 0))
        agent.process_events(0.0)
        assert agent.outbox.stats().depth == 0
    finally:
        agent.link = None
        agent.shutdown()


_CODES = [0, 16, 128, 131, 135, 144, 145, 151, 153]
_BODIES = [[0x12, 0x34]] + [[0x12, 0x34, c] for c in _CODES] + [[0x12, 0x34, c, 0] for c in _CODES]


@pytest.mark.parametrize("body", _BODIES)
def test_fast_puback_decoding_matches_paho(body: list[int]) -> None:
    fast = decode_puback(bytes(body))
    assert fast is not None
    ref = paho_packet.decode_puback(0x40, bytes(body), paho.MQTTv5)
    assert fast[0] == ref.mid == 0x1234
    assert (fast[1].value, str(fast[1]), fast[1].is_failure) == (
        ref.reason.value,
        str(ref.reason),
        ref.reason.is_failure,
    )


def test_fast_puback_path_uses_paho_internals_that_still_exist() -> None:
    """If a paho upgrade renames what _Client relies on, this fails (not the field)."""
    got: list[tuple[int, int]] = []
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    client.on_publish = lambda _c, _u, mid, rc, _p: got.append((mid, rc.value))
    info = client.publish("t/x", b"1", qos=1)  # not connected: kept for sending later
    assert info.mid in client._out_messages
    client._in_packet = {
        **client._in_packet,
        "command": 0x40,
        "packet": bytearray([0, info.mid, 135]),
    }
    client._handle_pubackcomp("PUBACK")
    assert got == [(info.mid, 135)]
    assert info.mid not in client._out_messages
    # A PUBACK with properties takes paho's own path, with the same outcome.
    info2 = client.publish("t/x", b"2", qos=1)
    props = bytearray([0, info2.mid, 0x87, 3, 0x1F, 0, 0])  # reason string ""
    client._in_packet = {**client._in_packet, "command": 0x40, "packet": props}
    client._handle_pubackcomp("PUBACK")
    assert got[-1] == (info2.mid, 135)


@pytest.mark.parametrize("delay", [0, 1, 300])
def test_the_will_carries_its_delay_interval_in_the_connect_packet(delay: int) -> None:
    """MQTT 5 Will Delay Interval (property 0x18, four bytes) in the CONNECT the
    device sends: Artemis publishes a will without one only when the session ends."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        link = MqttLink(
            MqttSettings(host="127.0.0.1", port=server.getsockname()[1], will_delay_s=delay),
            client_id="d1",
            password="",
            status_topic="thermowatch/s/d1/status",
            config_topic="thermowatch/s/d1/config",
            will_payload=b"offline",
            events=queue.Queue(),
        )
        link.start()
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                packet = conn.recv(4096)
        finally:
            link.stop(timeout_s=0.1)
    assert packet[0] == 0x10  # CONNECT
    assert b"\x18" + delay.to_bytes(4, "big") + b"\x00\x17thermowatch/s/d1/status" in packet
