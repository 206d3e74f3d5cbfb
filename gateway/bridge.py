"""The pure core of the gateway: one MQTT message in, one Kafka record out.

:func:`bridge` never raises and never does I/O. A payload that passes the
contract becomes a record on the Kafka topic for its MQTT topic kind, keyed by
device id; anything else becomes a :class:`~telemetry_contract.DeadLetter` on
the dead-letter topic, with the reason, the source topic and the raw payload
(base64 when it is not UTF-8).

Checks, in order: the topic (``thermowatch/<site>/<device>/<kind>``), the size
limit, the contract (types, ranges, schema version), timestamp sanity (not
before 2020, not more than five minutes ahead of the gateway's clock), and
that the device id and site in the payload are the topic's (the broker's ACL
ties the topic to the authenticated device, so this stops one device writing
as another).

>>> from telemetry_contract import kafka_topics
>>> topics = kafka_topics("tw")
>>> payload = (b'{"type":"reading","schema_version":1,"device_id":"s1-d01",'
...            b'"sensor_id":"host","site":"s1","seq":3,"ts":1767225600000,"temp_c":21.5}')
>>> rec = bridge("thermowatch/s1/s1-d01/telemetry", payload,
...              received_ms=1_767_225_600_100, gateway_id="gw1", topics=topics)
>>> rec.topic, rec.key, rec.reason
('tw.telemetry', b's1-d01', None)
>>> rec.seqs
SeqSpan(site='s1', device_id='s1-d01', first=3, last=3)
>>> dict(rec.headers)["mqtt_topic"]
b'thermowatch/s1/s1-d01/telemetry'
>>> bad = bridge("thermowatch/s1/s1-d02/telemetry", payload,
...              received_ms=1_767_225_600_100, gateway_id="gw1", topics=topics)
>>> bad.topic, bad.key, bad.reason, bad.seqs
('tw.deadletter', b's1-d02', <Reason.DEVICE_MISMATCH: 'device_mismatch'>, None)
>>> from telemetry_contract import decode
>>> decode(bad.value).detail
"device_id: 's1-d01' does not match the topic's device 's1-d02'"
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from telemetry_contract import (
    MAX_PAYLOAD_BYTES,
    ContractError,
    DeadLetter,
    Gap,
    KafkaTopics,
    Reading,
    Reason,
    decode,
    encode,
    kafka_key,
    kafka_topic_for,
    parse_mqtt_topic,
    printable,
)
from telemetry_contract.deadletter import DEADLETTER_LIMIT
from telemetry_contract.deadletter import dead_letter as dead_letter_of
from telemetry_contract.topics import TOPIC_ROOT

__all__ = [
    "DEADLETTER_PAYLOAD_LIMIT",
    "Header",
    "KafkaRecord",
    "SeqSpan",
    "bridge",
    "dead_letter",
    "fallback_dead_letter",
]

Header = tuple[str, bytes]

#: Largest encoded dead letter: the contract's payload limit, so that any
#: consumer decodes the dead-letter topic with default settings.
DEADLETTER_PAYLOAD_LIMIT: Final = DEADLETTER_LIMIT
_MAX_USER_PROPERTIES: Final = 16
_MAX_PROPERTY_CHARS: Final = 256
#: Raw payload bytes a fallback dead letter keeps (base64: 4/3 of it, within the limit).
_FALLBACK_PAYLOAD_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class SeqSpan:
    """The device seqs ``first``..``last`` one record carries (a reading: one seq;
    a gap: its ``first_seq``..``last_seq``): what a receipt names once Kafka has it."""

    site: str
    device_id: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What to write to Kafka for one MQTT message.

    ``reason`` is None for a forwarded message and the rejection reason for a
    dead letter; ``kind`` is the MQTT topic kind (``telemetry``...) or
    ``unknown`` when the topic did not parse.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...]
    reason: Reason | None
    kind: str
    #: Set when the gateway met an unexpected error with this message (a bug
    #: below it: the name of the exception); the record is then a dead letter.
    error: str | None = None
    #: Where that error happened (``validate``, ``dead letter``, ``bridge``): a metric label.
    error_stage: str = ""
    #: The device seqs of a forwarded reading or gap; None for other kinds and
    #: for dead letters (a refused payload has no seq to trust).
    seqs: SeqSpan | None = None

    @property
    def dead_letter(self) -> bool:
        """True when this record goes to the dead-letter topic."""
        return self.reason is not None


def bridge(
    mqtt_topic: str,
    payload: bytes,
    *,
    received_ms: int,
    gateway_id: str,
    topics: KafkaTopics,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    user_properties: Iterable[tuple[str, str]] = (),
    topic_root: str = TOPIC_ROOT,
) -> KafkaRecord:
    """Turn one MQTT message into one Kafka record; never raises.

    Whatever goes wrong, the result is a dead letter: the contract's when it
    can be built, else :func:`fallback_dead_letter` (payload in base64, every
    text escaped to ASCII), so the message can always be acknowledged after
    Kafka has its record.

    ``user_properties`` (MQTT v5) are copied to headers named ``mqtt.<name>``
    (at most 16, names and values cut to 256 characters), so that trace ids
    set by a device travel with its data.

    >>> from telemetry_contract import kafka_topics
    >>> rec = bridge("thermowatch/s1/s1-d01/telemetry", b"\\xff\\xfe",
    ...              received_ms=1_767_225_600_000, gateway_id="gw1", topics=kafka_topics())
    >>> rec.reason.value, rec.kind
    ('not_json', 'telemetry')
    >>> from telemetry_contract import decode
    >>> dl = decode(rec.value)
    >>> dl.payload, dl.payload_encoding, dl.source_topic
    ('//4=', 'base64', 'thermowatch/s1/s1-d01/telemetry')
    >>> bridge("not/a/topic", b"{}", received_ms=0, gateway_id="gw1",
    ...        topics=kafka_topics()).reason.value
    'bad_topic'
    """
    error: str | None = None
    try:
        return _forward(
            mqtt_topic,
            payload,
            received_ms=received_ms,
            gateway_id=gateway_id,
            topics=topics,
            max_bytes=max_bytes,
            user_properties=user_properties,
            topic_root=topic_root,
        )
    except ContractError as exc:  # the contract's decoders raise nothing else
        reason, detail = exc.reason, str(exc)
    except Exception as exc:  # a bug in the contract must not lose the payload
        error = type(exc).__name__
        reason = Reason.INVALID_VALUE
        detail = f"unexpected error while validating: {error}: {printable(str(exc), 512)}"
    try:
        record = dead_letter(
            mqtt_topic,
            payload,
            reason,
            detail,
            received_ms=received_ms,
            gateway_id=gateway_id,
            topics=topics,
            topic_root=topic_root,
            user_properties=user_properties,
        )
    except Exception as exc:  # e.g. text that cannot be encoded: keep the raw bytes
        return fallback_dead_letter(
            mqtt_topic,
            payload,
            reason,
            detail,
            received_ms=received_ms,
            gateway_id=gateway_id,
            topics=topics,
            error=f"dead letter: {type(exc).__name__}",
            stage="dead letter",
        )
    if error is not None:
        return dataclasses.replace(record, error=error, error_stage="validate")
    return record


def _forward(
    mqtt_topic: str,
    payload: bytes,
    *,
    received_ms: int,
    gateway_id: str,
    topics: KafkaTopics,
    max_bytes: int,
    user_properties: Iterable[tuple[str, str]],
    topic_root: str,
) -> KafkaRecord:
    route = _route(mqtt_topic, topic_root, topics)
    message = decode(payload, topic=route.check_topic, now_ms=received_ms, max_bytes=max_bytes)
    headers: tuple[Header, ...] = (
        *_type_headers(type(message), getattr(message, "schema_version", 1)),
        ("mqtt_topic", route.topic_bytes),
        ("gateway_id", gateway_id.encode()),
        ("received_ts", str(received_ms).encode()),
    )
    if user_properties:
        headers += tuple(_user_headers(user_properties))
    seqs: SeqSpan | None = None
    if type(message) is Reading:
        seqs = SeqSpan(message.site, message.device_id, message.seq, message.seq)
    elif type(message) is Gap:
        seqs = SeqSpan(message.site, message.device_id, message.first_seq, message.last_seq)
    return KafkaRecord(
        topic=route.target,
        key=route.key,
        value=encode(message),
        headers=headers,
        reason=None,
        kind=route.kind,
        seqs=seqs,
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """What a concrete MQTT topic decides about its records (topics repeat: cached)."""

    target: str
    key: bytes
    kind: str
    check_topic: str
    topic_bytes: bytes


@functools.lru_cache(maxsize=65_536)
def _route(mqtt_topic: str, topic_root: str, topics: KafkaTopics) -> _Route:
    parts = parse_mqtt_topic(mqtt_topic, root=topic_root)
    # decode() checks topics under the default root.
    check = mqtt_topic if topic_root == TOPIC_ROOT else TOPIC_ROOT + mqtt_topic[len(topic_root) :]
    return _Route(
        target=kafka_topic_for(parts.kind, topics),
        key=kafka_key(parts.device_id),
        kind=parts.kind.value,
        check_topic=check,
        topic_bytes=mqtt_topic.encode(),
    )


@functools.lru_cache(maxsize=256)
def _type_headers(cls: type, schema_version: object) -> tuple[Header, Header]:
    return (
        ("schema_version", str(schema_version).encode()),
        ("message_type", str(getattr(cls, "__struct_config__").tag).encode()),  # noqa: B009
    )


def _user_headers(props: Iterable[tuple[str, str]]) -> list[Header]:
    out: list[Header] = []
    for i, (name, value) in enumerate(props):
        if i >= _MAX_USER_PROPERTIES:
            break
        # Kafka encodes header names as UTF-8: a lone surrogate must not get there.
        key = str(name)[:_MAX_PROPERTY_CHARS].encode("utf-8", "replace").decode("utf-8")
        out.append(("mqtt." + key, str(value)[:_MAX_PROPERTY_CHARS].encode("utf-8", "replace")))
    return out


def dead_letter(
    mqtt_topic: str,
    payload: bytes,
    reason: Reason,
    detail: str,
    *,
    received_ms: int,
    gateway_id: str,
    topics: KafkaTopics,
    topic_root: str = TOPIC_ROOT,
    user_properties: Iterable[tuple[str, str]] = (),
) -> KafkaRecord:
    """The dead-letter record for a rejected payload.

    The letter is the contract's (:func:`telemetry_contract.deadletter.dead_letter`:
    the payload kept whole, or cut to fit :data:`DEADLETTER_PAYLOAD_LIMIT`
    bytes with the detail saying so). The key is the topic's device id when
    the topic names one, so a device's dead letters stay together.

    >>> from telemetry_contract import kafka_topics, decode
    >>> rec = dead_letter("thermowatch/s1/d1/telemetry", b"x" * 70000, Reason.TOO_LARGE,
    ...                   "payload: too big", received_ms=5, gateway_id="g", topics=kafka_topics())
    >>> dl = decode(rec.value)
    >>> len(dl.payload), dl.detail
    (8192, 'payload: too big (payload cut to the first 8192 of 70000 bytes)')
    """
    letter, value = dead_letter_of(
        payload,
        reason,
        detail,
        source_topic=mqtt_topic,
        received_ms=received_ms,
        gateway_id=gateway_id,
        limit=DEADLETTER_PAYLOAD_LIMIT,
    )
    source = letter.source_topic
    key = _device_of(mqtt_topic, topic_root)
    kind = _kind_of(mqtt_topic, topic_root)
    headers: tuple[Header, ...] = (
        ("schema_version", b"1"),
        ("message_type", b"dead_letter"),
        ("reason", reason.value.encode()),
        ("mqtt_topic", source.encode("utf-8", "replace")),
        ("gateway_id", gateway_id.encode("utf-8", "replace")),
        ("received_ts", str(received_ms).encode()),
        *_user_headers(user_properties),
    )
    return KafkaRecord(
        topic=topics.deadletter,
        key=None if key is None else kafka_key(key),
        value=value,
        headers=headers,
        reason=reason,
        kind=kind,
    )


def _device_of(mqtt_topic: str, root: str) -> str | None:
    try:
        return parse_mqtt_topic(mqtt_topic, root=root).device_id
    except ContractError:
        return None


def _kind_of(mqtt_topic: str, root: str) -> str:
    try:
        return parse_mqtt_topic(mqtt_topic, root=root).kind.value
    except ContractError:
        return "unknown"


def fallback_dead_letter(
    mqtt_topic: str,
    payload: bytes,
    reason: Reason,
    detail: str,
    *,
    received_ms: int,
    gateway_id: str,
    topics: KafkaTopics,
    error: str,
    stage: str = "dead letter",
) -> KafkaRecord:
    """A minimal dead letter that cannot fail to build: for when :func:`dead_letter` did.

    Every text is escaped (:func:`~telemetry_contract.printable`) and bounded, and the
    payload (its first 4 KiB) is kept in base64, so the letter encodes whatever the
    input held and stays within ``DEADLETTER_LIMIT``.

    >>> from telemetry_contract import kafka_topics, decode
    >>> rec = fallback_dead_letter("thermowatch/s1/\\ud800/telemetry", b'{"\\\\ud800": NaN}',
    ...     Reason.NON_FINITE, "\\ud800: not finite", received_ms=5, gateway_id="g",
    ...     topics=kafka_topics(), error="dead letter: UnicodeEncodeError")
    >>> letter = decode(rec.value)
    >>> letter.source_topic, letter.payload_encoding, rec.key, rec.error
    ('thermowatch/s1/\\\\ud800/telemetry', 'base64', None, 'dead letter: UnicodeEncodeError')
    """
    # At most 4 bytes per character of text (1,024 + 512 + 128 and the note) and
    # 5,464 of base64: under DEADLETTER_LIMIT whatever the characters are.
    kept = payload[:_FALLBACK_PAYLOAD_BYTES]
    note = f" (payload cut to the first {len(kept)} of {len(payload)} bytes)"
    letter = DeadLetter(
        reason=reason.value,
        detail=printable(detail, 1024) + (note if len(kept) < len(payload) else ""),
        source_topic=printable(mqtt_topic, 512),
        received_ts=max(0, int(received_ms)),
        payload=base64.b64encode(kept).decode("ascii"),
        payload_encoding="base64",
        gateway_id=printable(gateway_id, 128),
    )
    return KafkaRecord(
        topic=topics.deadletter,
        key=None,
        value=encode(letter),
        headers=(
            ("schema_version", b"1"),
            ("message_type", b"dead_letter"),
            ("reason", reason.value.encode("ascii", "replace")),
            ("mqtt_topic", letter.source_topic.encode("utf-8")),
            ("gateway_id", letter.gateway_id.encode("utf-8")),
            ("received_ts", str(letter.received_ts).encode()),
        ),
        reason=reason,
        kind="unknown",
        error=printable(error, 200),
        error_stage=stage,
    )
