"""The gateway's PUBLISH decoder is total: a message or a protocol error, never an exception.

And the client acts on the error as MQTT v5 4.13 says: a DISCONNECT with the
reason code, nothing more read from that connection; a packet over the
announced Maximum Packet Size is refused from its header, before its body.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.wire import (
    MALFORMED_PACKET,
    PACKET_TOO_LARGE,
    PROTOCOL_ERROR,
    TOPIC_ALIAS_INVALID,
    GatewayClient,
    ProtocolError,
    check_publish,
    packet_size,
)
from stagekit.mqttwire import decode_publish
from tests.unit.test_mqttwire import ChunkedSocket, _remaining, publish_packet

LIMIT = 65536


def _body(topic: bytes, mid: int = 7, props: bytes = b"\x00", payload: bytes = b"{}") -> bytes:
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + props + payload


def _props(*items: bytes) -> bytes:
    raw = b"".join(items)
    return _remaining(len(raw)) + raw


def _user(key: bytes, value: bytes) -> bytes:
    return b"\x26" + len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


@settings(max_examples=400, deadline=None)
@given(first=st.integers(0x30, 0x3F), body=st.binary(max_size=300))
def test_any_bytes_give_a_message_or_a_protocol_error(first: int, body: bytes) -> None:
    got = check_publish(first, body, max_packet_size=LIMIT)
    assert isinstance(got, (tuple, ProtocolError))
    if isinstance(got, ProtocolError):
        assert got.code in (MALFORMED_PACKET, PROTOCOL_ERROR, TOPIC_ALIAS_INVALID)
        assert got.detail.isascii() and len(got.detail) < 200
    else:
        topic, mid, qos, _payload, user = got
        assert "\x00" not in topic and qos in (0, 1) and (mid > 0 or qos == 0)
        topic.encode("utf-8")  # no lone surrogate gets through
        for key, value in user:
            (key + value).encode("utf-8")


@st.composite
def mutated(draw: Any) -> tuple[int, bytes]:
    """A valid PUBLISH with a few bytes flipped, cut or inserted (where the bugs are)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("trace", draw(st.text(max_size=8)))
    first, body = publish_packet(b"thermowatch/s1/d1/telemetry", 9, 1, props, b'{"t":1}')
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.sampled_from([b"\x00", b"\xed\xa0\x80", b"\xff", b"\x23"]))
    return first | draw(st.sampled_from([0, 4, 6])), bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_mutated_publishes_are_decoded_like_the_fast_path_or_refused(
    packet: tuple[int, bytes],
) -> None:
    first, body = packet
    got = check_publish(first, body, max_packet_size=LIMIT)
    fast = decode_publish(first, body)
    # What the fast path accepts is accepted unchanged, but for the two things
    # it does not check: U+0000 in the topic and packet identifier 0 (both malformed).
    if fast is not None and "\x00" not in fast[0] and (fast[1] or not fast[2]):
        assert got == fast
    elif fast is not None:
        assert isinstance(got, ProtocolError) and got.code == MALFORMED_PACKET
    assert isinstance(got, (tuple, ProtocolError))


def test_each_malformed_part_is_named_with_its_reason_code() -> None:
    cases: dict[str, tuple[int, bytes, int]] = {
        "surrogate topic": (0x32, _body(b"a/\xed\xa0\x80"), MALFORMED_PACKET),
        "invalid UTF-8 topic": (0x32, _body(b"a/\xff"), MALFORMED_PACKET),
        "NUL topic": (0x32, _body(b"a\x00b"), MALFORMED_PACKET),
        "topic length": (0x32, b"\x10\x00abc", MALFORMED_PACKET),
        "empty topic": (0x32, _body(b""), PROTOCOL_ERROR),
        "packet id 0": (0x32, _body(b"a", mid=0), MALFORMED_PACKET),
        "no packet id": (0x32, b"\x00\x01a\x00", MALFORMED_PACKET),
        "QoS 3": (0x36, _body(b"a"), MALFORMED_PACKET),
        "QoS 2": (0x34, _body(b"a"), PROTOCOL_ERROR),
        "property length": (0x32, _body(b"a", props=b"\x7f"), MALFORMED_PACKET),
        "property varint": (0x32, _body(b"a", props=b"\xff\xff\xff\xff\xff"), MALFORMED_PACKET),
        "unknown property": (
            0x32,
            _body(b"a", props=_props(b"\x11\x00\x00\x00\x01")),
            MALFORMED_PACKET,
        ),
        "topic alias": (0x32, _body(b"a", props=_props(b"\x23\x00\x01")), TOPIC_ALIAS_INVALID),
        "repeated property": (0x32, _body(b"a", props=_props(b"\x01\x00\x01\x01")), PROTOCOL_ERROR),
        "format indicator 2": (0x32, _body(b"a", props=_props(b"\x01\x02")), PROTOCOL_ERROR),
        "subscription id 0": (0x32, _body(b"a", props=_props(b"\x0b\x00")), PROTOCOL_ERROR),
        "user property NUL": (
            0x32,
            _body(b"a", props=_props(_user(b"k\x00", b"v"))),
            MALFORMED_PACKET,
        ),
        "user property surrogate": (
            0x32,
            _body(b"a", props=_props(_user(b"k", b"\xed\xb0\x80"))),
            MALFORMED_PACKET,
        ),
        "user property length": (
            0x32,
            _body(b"a", props=_props(b"\x26\x00\x09k")),
            MALFORMED_PACKET,
        ),
        "expiry cut": (0x32, _body(b"a", props=_props(b"\x02\x00\x01")), MALFORMED_PACKET),
    }
    for name, (first, body, code) in cases.items():
        got = check_publish(first, body, max_packet_size=LIMIT)
        assert isinstance(got, ProtocolError) and got.code == code, name


def test_what_paho_refused_but_mqtt_allows_is_a_message() -> None:
    """U+FEFF in a user property is valid UTF-8 (MQTT v5 1.5.4 says keep it)."""
    body = _body(b"a/b", props=_props(_user(b"k", "\ufeffv".encode())))
    assert check_publish(0x32, body, max_packet_size=LIMIT) == (
        "a/b",
        7,
        1,
        b"{}",
        (("k", "\ufeffv"),),
    )


def test_a_publish_over_the_maximum_packet_size_is_too_large() -> None:
    body = _body(b"a", payload=b"x" * 2000)
    assert packet_size(len(body)) == len(body) + 3
    got = check_publish(0x32, body, max_packet_size=len(body) + 2)
    assert isinstance(got, ProtocolError) and got.code == PACKET_TOO_LARGE
    assert check_publish(0x32, body, max_packet_size=len(body) + 3) == ("a", 7, 1, b"x" * 2000, ())


class _Wire(ChunkedSocket):
    def __init__(self, data: bytes, sizes: list[int]) -> None:
        super().__init__(data, sizes)
        self.sent = bytearray()

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)


def _client(max_packet_size: int) -> tuple[GatewayClient, list[Any], list[ProtocolError]]:
    got: list[Any] = []
    errors: list[ProtocolError] = []
    client = GatewayClient(
        CallbackAPIVersion.VERSION2,
        client_id="t",
        protocol=paho.MQTTv5,
        manual_ack=True,
        on_publish_fast=got.append,
        on_protocol_error=errors.append,
        max_packet_size=max_packet_size,
    )
    return client, got, errors


def _read_all(client: GatewayClient, sock: _Wire) -> None:
    client._sock = sock  # type: ignore[assignment]
    client._state = paho._ConnectionState.MQTT_CS_CONNECTED
    for _ in range(1000):
        if client._packet_read() == MQTTErrorCode.MQTT_ERR_AGAIN and not sock.data:
            break
    client.loop_write()


def test_an_oversize_packet_is_refused_from_its_header_with_disconnect_0x95() -> None:
    """20 MiB announced: refused before the body is read; what follows is not read either."""
    small = _body(b"a/b")
    huge_header = bytes([0x32]) + _remaining(20 * 1024 * 1024)
    stream = bytes([0x32]) + _remaining(len(small)) + small + huge_header + b"x" * 4096
    stream += bytes([0x32]) + _remaining(len(small)) + small
    client, got, errors = _client(LIMIT)
    sock = _Wire(stream, [len(stream)])
    _read_all(client, sock)
    assert got == [("a/b", 7, 1, b"{}", ())]  # only the message before the big one
    assert [e.code for e in errors] == [PACKET_TOO_LARGE]
    assert bytes(sock.sent[:3]) == b"\xe0\x01\x95"  # DISCONNECT, reason 0x95


def test_an_oversize_packet_split_across_reads_is_refused_too() -> None:
    huge = bytes([0x32]) + _remaining(200_000) + _body(b"a/b", payload=b"x" * (200_000 - 9))
    client, got, errors = _client(LIMIT)
    sock = _Wire(huge, [1, 2, 3] + [4096] * 100)  # the header arrives in pieces
    _read_all(client, sock)
    assert got == [] and [e.code for e in errors] == [PACKET_TOO_LARGE]
    assert sock.data  # most of the body was never read
    assert bytes(sock.sent[:3]) == b"\xe0\x01\x95"


def test_a_malformed_publish_ends_the_connection_with_0x81() -> None:
    bad = _body(b"a/\xed\xa0\x80")
    good = _body(b"a/b")
    stream = (
        bytes([0x32]) + _remaining(len(bad)) + bad + bytes([0x32]) + _remaining(len(good)) + good
    )
    client, got, errors = _client(LIMIT)
    sock = _Wire(stream, [len(stream)])
    _read_all(client, sock)
    assert got == [] and [e.code for e in errors] == [MALFORMED_PACKET]
    assert bytes(sock.sent[:3]) == b"\xe0\x01\x81"


def test_a_remaining_length_over_four_bytes_ends_the_connection_with_0x81() -> None:
    client, got, errors = _client(LIMIT)
    sock = _Wire(bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]) + b"x" * 100, [200])
    _read_all(client, sock)
    assert got == [] and [e.code for e in errors] == [MALFORMED_PACKET]
    assert bytes(sock.sent[:3]) == b"\xe0\x01\x81"
