"""paho's MQTT client with buffered reads and a fast path for the hot packet type.

paho 2.x frames every incoming packet byte by byte: three ``recv`` calls
(command byte, remaining-length bytes, body) and a dozen dict updates per
packet, then builds a ``Properties`` object (about thirty attribute writes)
for every PUBLISH and PUBACK. At thousands of packets a second that is most
of a stage's CPU (see docs/benchmarks.md: edge and gateway). paho stays in
charge of the connection (CONNECT, keep-alive, SUBACK, DISCONNECT, the
publish window); this module only changes how bytes come off the socket:

* :class:`BufferedClient` reads up to 64 KiB per ``recv`` and keeps what paho
  did not ask for yet; when a whole packet waits in the buffer it is offered
  to :meth:`BufferedClient._fast_packet`, which a stage overrides for the one
  packet type it receives in bulk (the edge: PUBACK; the gateway: PUBLISH).
  Anything the fast path declines takes paho's own reader, from the same buffer.
* :func:`frame` and :func:`decode_publish` are the pure parts, with doctests;
  tests/unit/test_mqttwire.py checks them against paho's own decoder on
  generated packets, and that the paho internals used here still exist.

Hand-written rather than a library because no maintained Python MQTT client
is cheaper per message and offers paho 2.x's manual acknowledgement (gmqtt and
amqtt read the same way; aiomqtt wraps paho).
"""

from __future__ import annotations

from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = [
    "PROP_BINARY",
    "PROP_BYTE",
    "PROP_FOUR",
    "PROP_PAIR",
    "PROP_STRING",
    "PROP_TWO",
    "PROP_VARINT",
    "PUBLISH_PROPERTIES",
    "RECV_CHUNK",
    "REPEATABLE_PROPERTIES",
    "BufferedClient",
    "Publish",
    "decode_publish",
    "decode_varint",
    "frame",
]

#: How much one ``recv`` takes from the socket.
RECV_CHUNK: Final = 65536

#: A PUBLISH as :func:`decode_publish` returns it:
#: (topic, packet id, QoS, payload, user properties).
Publish = tuple[str, int, int, bytes, tuple[tuple[str, str], ...]]

#: How a PUBLISH property's value is encoded (MQTT v5 2.2.2.2): one byte, a
#: four- or two-byte integer, a UTF-8 string, binary data, a variable byte
#: integer, a UTF-8 string pair.
PROP_BYTE, PROP_FOUR, PROP_TWO, PROP_STRING, PROP_BINARY, PROP_VARINT, PROP_PAIR = range(7)
#: The MQTT v5 PUBLISH properties: id -> how its value is encoded. Shared by
#: the fast path here and the gateway's strict decoder (``gateway.wire``).
PUBLISH_PROPERTIES: Final = {
    0x01: PROP_BYTE,  # Payload Format Indicator
    0x02: PROP_FOUR,  # Message Expiry Interval
    0x03: PROP_STRING,  # Content Type
    0x08: PROP_STRING,  # Response Topic
    0x09: PROP_BINARY,  # Correlation Data
    0x0B: PROP_VARINT,  # Subscription Identifier (may repeat)
    0x23: PROP_TWO,  # Topic Alias (the fast path leaves it to paho: it changes the topic)
    0x26: PROP_PAIR,  # User Property (may repeat)
}
#: The PUBLISH properties that may appear more than once.
REPEATABLE_PROPERTIES: Final = frozenset({0x0B, 0x26})


def frame(buf: bytes | bytearray) -> tuple[int, int, int] | None:
    """``(first byte, body start, body end)`` of the packet at the start of ``buf``.

    None while the packet is not all there (or the length field is malformed:
    paho's reader then reports the protocol error).

    >>> frame(bytes([0x40, 2, 0, 7]))  # a whole PUBACK
    (64, 2, 4)
    >>> frame(bytes([0x40, 2, 0])) is None  # one byte missing
    True
    >>> frame(bytes([0x30, 0x80, 0x01]) + bytes(128))  # length 128 takes two bytes
    (48, 3, 131)
    >>> frame(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])) is None  # five length bytes
    True
    """
    # The Remaining Length is a variable byte integer (decode_varint), read
    # inline: this runs for every packet, and the call and tuple double its cost.
    n = len(buf)
    length = 0
    shift = 0
    pos = 1
    while True:
        if pos >= n or pos > 4:
            return None
        byte = buf[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            break
        shift += 7
    end = pos + length
    if end > n:
        return None
    return buf[0], pos, end


def decode_varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """``(value, position after it)`` of the variable byte integer at ``buf[pos:end]``.

    MQTT v5 1.5.5: seven bits per byte, least significant first, at most four
    bytes. None when it runs past ``end`` or over four bytes (malformed).

    >>> decode_varint(bytes([0x80, 0x01]), 0, 2)
    (128, 2)
    >>> decode_varint(bytes([0x80]), 0, 1) is None  # not all there
    True
    >>> decode_varint(bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x01]), 0, 5) is None  # five bytes
    True
    """
    value = 0
    shift = 0
    for i in range(pos, min(pos + 4, end)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def _user_properties(
    body: bytes | bytearray, pos: int, end: int
) -> tuple[tuple[str, str], ...] | None:
    """The user properties in ``body[pos:end]``; None for anything paho would refuse.

    paho refuses a Payload Format Indicator other than 0 or 1, a Subscription
    Identifier of 0, a repeated single-valued property, and strings holding
    NUL or U+FEFF (MQTT v5 1.5.4); declining those keeps its verdict.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[int] = set()
    while pos < end:
        ident = body[pos]
        kind = PUBLISH_PROPERTIES.get(ident)
        pos += 1
        if kind is None or kind == PROP_TWO or ident in seen:
            return None
        if kind == PROP_BYTE:
            if pos >= end or body[pos] > 1:
                return None
            pos += 1
        elif kind == PROP_FOUR:
            pos += 4
        elif kind == PROP_VARINT:
            got = decode_varint(body, pos, end)
            if got is None or got[0] == 0:
                return None
            pos = got[1]
        else:
            strings = []
            for _ in range(2 if kind == PROP_PAIR else 1):
                if pos + 2 > end:
                    return None
                size = (body[pos] << 8) | body[pos + 1]
                pos += 2 + size
                if pos > end:
                    return None
                if kind != PROP_BINARY:
                    try:
                        text = body[pos - size : pos].decode("utf-8")
                    except UnicodeDecodeError:
                        return None
                    if "\x00" in text or "\ufeff" in text:
                        return None
                    strings.append(text)
            if kind == PROP_PAIR:
                pairs.append((strings[0], strings[1]))
        if ident not in REPEATABLE_PROPERTIES:
            seen.add(ident)
    if pos != end:
        return None
    return tuple(pairs)


def decode_publish(first: int, body: bytes | bytearray) -> Publish | None:
    """Decode the body of an MQTT v5 PUBLISH of QoS 0 or 1.

    Returns None for anything it does not handle exactly like paho (QoS 2, a
    topic alias, a topic that is not UTF-8, an unknown property, a malformed
    body): the caller then gives the packet to paho.

    >>> body = b"\\x00\\x03a/b" + b"\\x00\\x07" + b"\\x00" + b'{"t":1}'
    >>> decode_publish(0x32, body)  # QoS 1, packet id 7, no properties
    ('a/b', 7, 1, b'{"t":1}', ())
    >>> props = b"\\x26\\x00\\x01k\\x00\\x01v" + b"\\x01\\x01"  # user property k=v, format 1
    >>> decode_publish(0x32, b"\\x00\\x03a/b\\x00\\x07" + bytes([len(props)]) + props + b"x")
    ('a/b', 7, 1, b'x', (('k', 'v'),))
    >>> decode_publish(0x34, body) is None  # QoS 2: paho's path
    True
    """
    qos = (first >> 1) & 3
    if qos > 1:
        return None
    n = len(body)
    if n < 3:
        return None
    pos = 2 + ((body[0] << 8) | body[1])
    if pos == 2 or pos > n:
        return None
    try:
        topic = body[2:pos].decode("utf-8")
    except UnicodeDecodeError:
        return None
    mid = 0
    if qos:
        if pos + 2 > n:
            return None
        mid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    got = decode_varint(body, pos, n)
    if got is None:
        return None
    size, pos = got
    end = pos + size
    if end > n:
        return None
    user: tuple[tuple[str, str], ...] = ()
    if size:
        props = _user_properties(body, pos, end)
        if props is None:
            return None
        user = props
    return topic, mid, qos, bytes(body[end:]), user


class BufferedClient(paho.Client):
    """paho's Client with buffered socket reads and a per-stage fast path.

    :meth:`buffered` says whether read data still waits in the buffer (the
    socket may not be readable then, so an external loop must call
    ``loop_read`` again without waiting for it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rbuf = bytearray()
        super().__init__(*args, **kwargs)

    def buffered(self) -> bool:
        """True while bytes read from the socket wait to be handled."""
        return bool(self._rbuf)

    def _fast_packet(self, first: int, body: bytearray) -> MQTTErrorCode | None:
        """Handle one whole packet, or return None to leave it to paho."""
        return None

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(RECV_CHUNK)
            if len(data) <= bufsize:
                return data  # includes b"" (connection closed)
            buf.extend(data)
        out = bytes(buf[:bufsize])
        del buf[:bufsize]
        return out

    def _sock_close(self) -> None:
        self._rbuf.clear()  # bytes of the old connection mean nothing on a new one
        super()._sock_close()

    def _packet_read(self) -> MQTTErrorCode:
        """One packet: from the buffer through the fast path when whole, else paho's reader."""
        if self._in_packet["command"] == 0:  # paho is not half-way through a packet
            buf = self._rbuf
            if not buf:
                try:
                    data = super()._sock_recv(RECV_CHUNK)
                except BlockingIOError:
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except OSError:  # includes TimeoutError, as in paho
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
                if not data:
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
                buf.extend(data)
            whole = frame(buf)
            if whole is not None:
                first, start, end = whole
                rc = self._fast_packet(first, buf[start:end])
                if rc is not None:
                    del buf[:end]
                    with self._msgtime_mutex:
                        self._last_bytes_received = paho.time_func()
                    return rc
        return super()._packet_read()
