"""The buffered MQTT reader and its PUBLISH fast path agree with paho's own decoding."""

from __future__ import annotations

import random
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet as paho_packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt import _PAHO_FAST
from gateway.wire import GatewayClient
from stagekit.mqttwire import decode_publish, frame

_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff"), max_size=12
)


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(
    topic: bytes, mid: int, qos: int, props: Properties | None, payload: bytes, dup: bool = False
) -> tuple[int, bytes]:
    """(first byte, body) of a PUBLISH, properties packed by paho itself."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += props.pack() if props is not None else b"\x00"
    return 0x30 | (0x08 if dup else 0) | (qos << 1), body + payload


def paho_view(first: int, body: bytes) -> tuple[str, int, int, bytes, tuple[tuple[str, str], ...]]:
    """What the gateway takes from paho's decoding of the same packet."""
    ref = paho_packet.decode_publish(first, body, paho.MQTTv5)
    user = getattr(ref.properties, "UserProperty", None) or []
    return (
        ref.topic.decode("utf-8"),
        ref.mid,
        ref.qos,
        bytes(ref.payload),
        tuple((str(k), str(v)) for k, v in user),
    )


@st.composite
def publishes(draw: Any) -> tuple[int, bytes]:
    topic = draw(_text.filter(bool)).encode()
    qos = draw(st.sampled_from([0, 1]))
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if draw(st.booleans()):
        props.PayloadFormatIndicator = draw(st.sampled_from([0, 1]))
    if draw(st.booleans()):
        props.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        props.ContentType = draw(_text)
    if draw(st.booleans()):
        props.ResponseTopic = draw(_text)
    if draw(st.booleans()):
        props.CorrelationData = draw(st.binary(max_size=10))
    if draw(st.booleans()):
        props.SubscriptionIdentifier = draw(st.integers(1, 2**28 - 1))
    for key, value in draw(st.lists(st.tuples(_text, _text), max_size=3)):
        props.UserProperty = (key, value)
    payload = draw(st.binary(max_size=300))
    return publish_packet(
        topic, draw(st.integers(1, 65535)), qos, props, payload, draw(st.booleans())
    )


@settings(max_examples=400, deadline=None)
@given(publishes())
def test_fast_publish_decoding_matches_paho(packet: tuple[int, bytes]) -> None:
    first, body = packet
    assert decode_publish(first, body) == paho_view(first, body)


@settings(max_examples=400, deadline=None)
@given(publishes(), st.data())
def test_mutated_publish_is_declined_or_decoded_as_paho_decodes_it(
    packet: tuple[int, bytes], data: Any
) -> None:
    first, body = packet
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if how == "flip" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del raw[at:]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    fast = decode_publish(first, bytes(raw))
    if fast is None:
        return  # declined: paho decodes it (or reports the protocol error) instead
    try:
        ref = paho_view(first, bytes(raw))
    except Exception as exc:  # paho refuses what the fast path accepted
        pytest.fail(f"fast path accepted a packet paho rejects: {exc!r}")
    assert fast == ref


def test_what_the_fast_path_leaves_to_paho() -> None:
    ok = publish_packet(b"a/b", 7, 1, None, b"x")
    assert decode_publish(*ok) == ("a/b", 7, 1, b"x", ())
    assert decode_publish(*publish_packet(b"a/b", 7, 2, None, b"x")) is None  # QoS 2
    alias = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    alias.TopicAlias = 3
    assert decode_publish(*publish_packet(b"a/b", 7, 1, alias, b"x")) is None
    assert decode_publish(*publish_packet(b"", 7, 1, None, b"x")) is None  # alias-only topic
    assert decode_publish(*publish_packet(b"a/\xff", 7, 1, None, b"x")) is None  # not UTF-8
    assert decode_publish(0x32, b"\x00\x03a/") is None  # truncated topic
    # Strings paho refuses (MQTT-1.5.4-3: U+FEFF; MQTT-1.5.4-2: U+0000) are left
    # to paho, which reports the malformed packet; the generator above avoids them.
    for bad in ("\ufeff", "a\x00"):
        user = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        user.UserProperty = [("k", bad)]
        assert decode_publish(*publish_packet(b"a/b", 7, 1, user, b"x")) is None


def test_frame_finds_each_packet_of_a_stream() -> None:
    packets = [publish_packet(b"t", i, 1, None, bytes(i * 40)) for i in range(1, 6)]
    stream = b"".join(bytes([f]) + _remaining(len(b)) + b for f, b in packets)
    pos = 0
    for f, b in packets:
        got = frame(stream[pos:])
        assert got is not None
        first, start, end = got
        assert (first, stream[pos + start : pos + end]) == (f, b)
        pos += end
    assert pos == len(stream)
    assert all(frame(stream[:cut]) is None for cut in range(1, len(bytes([0x30])) + 4))


class ChunkedSocket:
    """Non-blocking socket that returns ``data`` in the given chunk sizes."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.recvs = data, sizes, 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        if not self.data:
            raise BlockingIOError
        size = min(n, self.sizes.pop(0) if self.sizes else len(self.data))
        out, self.data = self.data[:size], self.data[size:]
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("seed", range(20))
def test_gateway_client_reads_a_chunked_stream_in_order_through_both_paths(seed: int) -> None:
    """Whole and split packets (framed here or by paho), a PINGRESP between: every
    PUBLISH goes through the gateway's checked decoder, none through paho's."""
    rng = random.Random(seed)
    user = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    user.UserProperty = ("schema", "1")
    stream = bytearray()
    expected = []
    for i in range(60):
        size = rng.choice([0, 10, 200, 3000, 70_000])
        payload = bytes(rng.getrandbits(8) for _ in range(min(size, 50))) * (size // 50 + 1)
        payload = payload[:size]
        props = rng.choice([None, user])
        first, body = publish_packet(f"d/{i}".encode(), i + 1, 1, props, payload)
        stream += bytes([first]) + _remaining(len(body)) + body
        pairs = (("schema", "1"),) if props is user else ()
        expected.append((f"d/{i}", i + 1, 1, payload, pairs, False))
        if rng.random() < 0.2:
            stream += b"\xd0\x00"  # PINGRESP: paho's path
    got: list[tuple[Any, ...]] = []
    client = GatewayClient(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=paho.MQTTv5,
        manual_ack=True,
        on_publish_fast=lambda m: got.append((*m, False)),
        on_protocol_error=lambda e: pytest.fail(f"refused: {e}"),
        max_packet_size=1 << 20,
    )

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        user_props = getattr(msg.properties, "UserProperty", None) or []
        got.append((msg.topic, msg.mid, msg.qos, bytes(msg.payload), tuple(user_props), True))

    client.on_message = on_message
    sizes = [rng.choice([1, 2, 3, 7, 100, 5000, 65536, 200_000]) for _ in range(len(stream))]
    sock = ChunkedSocket(bytes(stream), sizes)
    client._sock = sock  # type: ignore[assignment]
    try:
        for _ in range(100_000):
            rc = client._packet_read()
            idle = not sock.data and not client.buffered() and client._in_packet["command"] == 0
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and idle:
                break
            assert rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
        else:
            pytest.fail("the reader did not finish the stream")
    finally:
        client._sock = None
    # Same messages in the same order, none through paho's on_message.
    assert got == expected
    assert not all(g[5] for g in got)  # the fast path was taken too


def test_gateway_fast_path_uses_paho_internals_that_still_exist() -> None:
    """If a paho upgrade renames what the reader relies on, this fails (not the field)."""
    assert _PAHO_FAST
    client = GatewayClient(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=paho.MQTTv5,
        manual_ack=True,
        on_publish_fast=lambda m: None,
        on_protocol_error=lambda e: None,
        max_packet_size=1 << 20,
    )
    for name in (
        "_in_packet",
        "_msgtime_mutex",
        "_last_bytes_received",
        "_manual_ack",
        "_protocol",
    ):
        assert hasattr(client, name), name
    assert client._in_packet["command"] == 0
    assert callable(paho.time_func)
