"""The gateway's PUBLISH decoder: total, and strict where MQTT v5 says MUST.

:func:`check_publish` turns the body of any PUBLISH packet the broker sends
into either the message (:data:`~stagekit.mqttwire.Publish`) or a
:class:`ProtocolError` carrying the MQTT v5 reason code the gateway closes the
connection with (MQTT v5 4.13: a Malformed Packet or a Protocol Error ends the
connection with a DISCONNECT carrying that code). It never raises.

The common packet takes :func:`stagekit.mqttwire.decode_publish` (the fast
path); whatever that declines is read again here, byte by byte, to name what
is wrong. What the specification requires a receiver to refuse is refused
(framing, lengths, ill-formed UTF-8 and lone surrogates, U+0000, unknown or
repeated properties, QoS 3, a packet over the Maximum Packet Size the gateway
announced, a Topic Alias it never allowed, QoS 2 on its QoS 1 subscription).
Everything else is a message: a topic or payload the contract does not like
is the bridge's business (a dead letter), not the connection's.

Hand-written rather than paho's reader: paho raises on some malformed
properties instead of reporting them, and reads a packet of any size.

>>> body = b"\\x00\\x03a/b" + b"\\x00\\x07" + b"\\x00" + b'{"t":1}'
>>> check_publish(0x32, body, max_packet_size=1024)
('a/b', 7, 1, b'{"t":1}', ())
>>> check_publish(0x32, b"\\x00\\x03a\\x00b\\x00\\x07\\x00", max_packet_size=1024)
ProtocolError(code=129, name='malformed_packet', detail='topic contains U+0000')
>>> check_publish(0x32, body, max_packet_size=16).name
'packet_too_large'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from stagekit.mqttwire import (
    PROP_BINARY,
    PROP_BYTE,
    PROP_FOUR,
    PROP_PAIR,
    PROP_TWO,
    PROP_VARINT,
    PUBLISH_PROPERTIES,
    REPEATABLE_PROPERTIES,
    BufferedClient,
    Publish,
    decode_publish,
    decode_varint,
)

__all__ = [
    "MALFORMED_PACKET",
    "PACKET_TOO_LARGE",
    "PROTOCOL_ERROR",
    "TOPIC_ALIAS_INVALID",
    "GatewayClient",
    "ProtocolError",
    "check_publish",
    "packet_size",
]

#: MQTT v5 reason codes (2.4) for the DISCONNECT that ends a connection.
MALFORMED_PACKET: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
TOPIC_ALIAS_INVALID: Final = 0x94
PACKET_TOO_LARGE: Final = 0x95

_NAMES: Final = {
    MALFORMED_PACKET: "malformed_packet",
    PROTOCOL_ERROR: "protocol_error",
    TOPIC_ALIAS_INVALID: "topic_alias_invalid",
    PACKET_TOO_LARGE: "packet_too_large",
}

# The PUBLISH properties and the variable byte integer are stagekit.mqttwire's.
# A Topic Alias (0x23) is never allowed: the gateway announces no Topic Alias Maximum.


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Why a packet ends the connection: the DISCONNECT reason code and a short text."""

    code: int
    name: str
    detail: str


def _error(code: int, detail: str) -> ProtocolError:
    return ProtocolError(code, _NAMES[code], detail)


def packet_size(body_length: int) -> int:
    """Bytes of a whole packet with a body of ``body_length`` bytes (MQTT v5 Maximum Packet Size).

    >>> packet_size(0), packet_size(127), packet_size(128)
    (2, 129, 131)
    """
    header = 2 if body_length < 128 else 3 if body_length < 16384 else 4
    if body_length >= 2_097_152:
        header = 5
    return header + body_length


def check_publish(
    first: int, body: bytes | bytearray, *, max_packet_size: int
) -> Publish | ProtocolError:
    """The message in a PUBLISH body, or the protocol error it is; never raises."""
    if packet_size(len(body)) > max_packet_size:
        return _error(
            PACKET_TOO_LARGE,
            f"PUBLISH of {packet_size(len(body))} bytes exceeds the announced "
            f"Maximum Packet Size of {max_packet_size}",
        )
    try:
        fast = decode_publish(first, body)
    except Exception:  # the slow path below names the problem
        fast = None
    if fast is not None and "\x00" not in fast[0] and (fast[1] or not fast[2]):
        return fast
    try:
        return _slow(first, body)
    except Exception as exc:  # a bug here must not end the read loop
        return _error(MALFORMED_PACKET, f"undecodable PUBLISH ({type(exc).__name__})")


def _text(buf: bytes | bytearray, pos: int, end: int, what: str) -> tuple[str, int] | ProtocolError:
    if pos + 2 > end:
        return _error(MALFORMED_PACKET, f"{what}: length beyond the packet")
    size = (buf[pos] << 8) | buf[pos + 1]
    stop = pos + 2 + size
    if stop > end:
        return _error(MALFORMED_PACKET, f"{what}: length beyond the packet")
    try:
        text = bytes(buf[pos + 2 : stop]).decode("utf-8")  # refuses surrogates too
    except UnicodeDecodeError:
        return _error(MALFORMED_PACKET, f"{what}: not well-formed UTF-8")
    if "\x00" in text:
        return _error(MALFORMED_PACKET, f"{what} contains U+0000")
    return text, stop


def _slow(first: int, body: bytes | bytearray) -> Publish | ProtocolError:
    qos = (first >> 1) & 3
    if qos == 3:
        return _error(MALFORMED_PACKET, "QoS 3")
    if qos == 2:
        return _error(PROTOCOL_ERROR, "QoS 2 on a subscription of maximum QoS 1")
    n = len(body)
    got = _text(body, 0, n, "topic")
    if isinstance(got, ProtocolError):
        return got
    topic, pos = got
    if not topic:
        return _error(PROTOCOL_ERROR, "empty topic and no Topic Alias")
    mid = 0
    if qos:
        if pos + 2 > n:
            return _error(MALFORMED_PACKET, "no packet identifier")
        mid = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if mid == 0:
            return _error(MALFORMED_PACKET, "packet identifier 0")
    length = decode_varint(body, pos, n)
    if length is None:
        return _error(MALFORMED_PACKET, "property length is not a variable byte integer")
    size, pos = length
    end = pos + size
    if end > n:
        return _error(MALFORMED_PACKET, "property length beyond the packet")
    props = _properties(body, pos, end)
    if isinstance(props, ProtocolError):
        return props
    return topic, mid, qos, bytes(body[end:]), props


def _properties(
    body: bytes | bytearray, pos: int, end: int
) -> tuple[tuple[str, str], ...] | ProtocolError:
    pairs: list[tuple[str, str]] = []
    seen: set[int] = set()
    while pos < end:
        ident = body[pos]
        kind = PUBLISH_PROPERTIES.get(ident)
        pos += 1
        if kind is None:
            return _error(MALFORMED_PACKET, f"property 0x{ident:02x} is not a PUBLISH property")
        if ident in seen:
            return _error(PROTOCOL_ERROR, f"property 0x{ident:02x} repeated")
        if ident not in REPEATABLE_PROPERTIES:
            seen.add(ident)
        if kind == PROP_BYTE:
            if pos >= end:
                return _error(MALFORMED_PACKET, "payload format indicator: no value")
            if body[pos] > 1:
                return _error(PROTOCOL_ERROR, f"payload format indicator {body[pos]}")
            pos += 1
        elif kind in (PROP_FOUR, PROP_TWO):
            if ident == 0x23:
                return _error(TOPIC_ALIAS_INVALID, "topic alias (the gateway allows none)")
            pos += 4
            if pos > end:
                return _error(MALFORMED_PACKET, "message expiry interval: no value")
        elif kind == PROP_VARINT:
            got = decode_varint(body, pos, end)
            if got is None:
                return _error(MALFORMED_PACKET, "subscription identifier: bad integer")
            if got[0] == 0:
                return _error(PROTOCOL_ERROR, "subscription identifier 0")
            pos = got[1]
        elif kind == PROP_BINARY:
            if pos + 2 > end:
                return _error(MALFORMED_PACKET, "correlation data: length beyond the packet")
            pos += 2 + ((body[pos] << 8) | body[pos + 1])
            if pos > end:
                return _error(MALFORMED_PACKET, "correlation data: length beyond the packet")
        else:
            what = "user property" if kind == PROP_PAIR else f"property 0x{ident:02x}"
            first = _text(body, pos, end, what)
            if isinstance(first, ProtocolError):
                return first
            pos = first[1]
            if kind == PROP_PAIR:
                second = _text(body, pos, end, what)
                if isinstance(second, ProtocolError):
                    return second
                pos = second[1]
                pairs.append((first[0], second[0]))
    return tuple(pairs)


class GatewayClient(BufferedClient):
    """paho's Client with every PUBLISH decoded by :func:`check_publish` off the read buffer.

    paho's own PUBLISH path builds a ``Properties``, an ``MQTTMessage`` and a
    ``threading.Condition`` per message and matches the topic against the
    per-topic callbacks: about 40 % of the gateway's CPU per message before
    (docs/benchmarks.md). Here a PUBLISH becomes ``on_publish_fast(message)``
    or, when it is malformed, too large or a protocol error,
    ``on_protocol_error(error)`` and a DISCONNECT with the error's reason code
    (the broker keeps the session; the supervisor reconnects with backoff).
    A packet whose Remaining Length already exceeds ``max_packet_size`` is
    refused before its body is read.
    """

    def __init__(
        self,
        *args: Any,
        on_publish_fast: Callable[[Publish], None],
        on_protocol_error: Callable[[ProtocolError], None],
        max_packet_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_publish_fast = on_publish_fast
        self._on_protocol_error = on_protocol_error
        self._max_packet_size = max_packet_size
        self._refusing = False

    def _fast_packet(self, first: int, body: bytes | bytearray) -> MQTTErrorCode | None:
        if first & 0xF0 != 0x30 or self._protocol != paho.MQTTv5 or not self._manual_ack:
            return None
        got = check_publish(first, body, max_packet_size=self._max_packet_size)
        if isinstance(got, ProtocolError):
            return self._refuse(got)
        self._on_publish_fast(got)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_handle(self) -> MQTTErrorCode:
        # A PUBLISH that paho framed itself (it arrived in pieces) is checked the same way.
        packet = self._in_packet
        got = self._fast_packet(packet["command"], packet["packet"])
        return super()._packet_handle() if got is None else got

    def _packet_read(self) -> MQTTErrorCode:
        if self._refusing:
            return MQTTErrorCode.MQTT_ERR_AGAIN  # the DISCONNECT is on its way out
        # A whole packet in the buffer is checked by check_publish; one that is
        # not goes to paho's reader, which _sock_recv stops right after an
        # oversize header, so that it is refused here before its body is read.
        rc = super()._packet_read()
        packet = self._in_packet
        if rc == MQTTErrorCode.MQTT_ERR_PROTOCOL and len(packet["remaining_count"]) > 4:
            return self._refuse(_error(MALFORMED_PACKET, "remaining length over four bytes"))
        if packet["command"] and packet["have_remaining"]:
            length = packet["remaining_length"]
            if packet_size(length) > self._max_packet_size:
                return self._refuse(self._too_large(length))
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if (
            packet["have_remaining"]
            and packet_size(packet["remaining_length"]) > self._max_packet_size
        ):
            # paho read an oversize header itself: stop it before the body (it
            # returns "again", and _packet_read refuses the packet).
            raise BlockingIOError
        return super()._sock_recv(bufsize)

    def _too_large(self, length: int) -> ProtocolError:
        return _error(
            PACKET_TOO_LARGE,
            f"packet of {packet_size(length)} bytes exceeds the announced "
            f"Maximum Packet Size of {self._max_packet_size}",
        )

    def _refuse(self, error: ProtocolError) -> MQTTErrorCode:
        """MQTT v5 4.13: DISCONNECT with the reason code, then close; read nothing more."""
        self._refusing = True
        self._rbuf.clear()
        self._on_protocol_error(error)
        self.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=error.code))
        return MQTTErrorCode.MQTT_ERR_AGAIN

    def reconnect(self) -> MQTTErrorCode:
        """A new connection reads again (paho resets its half-read packet here too)."""
        self._refusing = False
        return super().reconnect()
