"""Encode and decode messages; decoding validates and raises :class:`ContractError`.

One decoder serves every stage. Its fast path is msgspec's strict JSON decoder
into the tagged union of all messages; only when that fails does the slow path
run, which re-reads the payload with the standard library to produce a message
that names the field and the problem.

>>> payload = (b'{"type":"reading","schema_version":1,"device_id":"s1-d01",'
...            b'"sensor_id":"host","site":"s1","seq":3,"ts":1767225600000,"temp_c":21.5}')
>>> decode(payload, now_ms=1_767_225_600_000).temp_c
21.5
>>> decode(payload.replace(b"21.5", b"130"), now_ms=1_767_225_600_000)
Traceback (most recent call last):
...
telemetry_contract.errors.ContractError: temp_c: must be between -55.0 and 125.0 °C, got 130
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from telemetry_contract.errors import ContractError, Reason
from telemetry_contract.explain import (
    explain_malformed,
    explain_validation,
    message_tag,
    too_deep,
)
from telemetry_contract.messages import (
    DeadLetter,
    Message,
)
from telemetry_contract.topics import parse_mqtt_topic

__all__ = [
    "MAX_FUTURE_MS",
    "MAX_PAYLOAD_BYTES",
    "decode",
    "decode_as",
    "encode",
    "to_builtins",
]

#: Largest payload accepted, in bytes. A reading is about 250 bytes; the limit
#: leaves room for configs and dead letters while bounding broker memory.
MAX_PAYLOAD_BYTES: Final = 16 * 1024
#: How far ahead of the receiver's clock an event time may be (clock skew).
MAX_FUTURE_MS: Final = 5 * 60 * 1000

_DECODER: Final = msgspec.json.Decoder(Message)
_ENCODER: Final = msgspec.json.Encoder()
T = TypeVar("T", bound=Message)
D = TypeVar("D")


def encode(message: Message) -> bytes:
    """Serialise a message to compact JSON (the wire format)."""
    return _ENCODER.encode(message)


def to_builtins(message: Message) -> dict[str, Any]:
    """The message as plain Python types (enums as their values)."""
    out: dict[str, Any] = msgspec.to_builtins(message)
    return out


def decode(
    payload: bytes | str,
    *,
    topic: str | None = None,
    now_ms: int | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Message:
    """Decode and validate any message.

    With ``topic``, also check that the message type is allowed on that MQTT
    topic and that its ``device_id`` and ``site`` are the topic's. Event times
    more than :data:`MAX_FUTURE_MS` after ``now_ms`` (default: the wall clock)
    are rejected.
    """
    raw = wire_bytes(payload, max_bytes)
    message: Message = decode_raw(_DECODER, raw)
    ts: int | None = getattr(message, "ts", None)  # DeadLetter has none
    if ts is not None:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ts > now + MAX_FUTURE_MS:
            raise _future(ts, now)
    if topic is not None:
        parts = parse_mqtt_topic(topic)
        # Fast path; _check_topic re-checks and raises the precise error. A
        # DeadLetter is never allowed on a topic, so the first test stops it
        # before its (absent) device_id is read.
        if (
            type(message) not in parts.allowed
            or message.device_id != parts.device_id  # type: ignore[union-attr]
            or message.site != parts.site  # type: ignore[union-attr]
        ):
            _check_topic(message, topic)
    return message


def decode_as(
    payload: bytes | str,
    cls: type[T],
    *,
    topic: str | None = None,
    now_ms: int | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> T:
    """Decode, validate and require one message type.

    >>> from telemetry_contract.messages import Reading
    >>> gap = (b'{"type":"gap","device_id":"d","site":"s","ts":1767225600000,'
    ...        b'"first_seq":1,"last_seq":2,"reason":"outbox_full"}')
    >>> decode_as(gap, Reading, now_ms=1_767_225_600_000)
    Traceback (most recent call last):
    ...
    telemetry_contract.errors.ContractError: type: expected 'reading', got 'gap'
    """
    message = decode(payload, topic=topic, now_ms=now_ms, max_bytes=max_bytes)
    if not isinstance(message, cls):
        raise ContractError(
            Reason.WRONG_MESSAGE_TYPE,
            f"expected {message_tag(cls)!r}, got {message_tag(type(message))!r}",
            field="type",
        )
    return message


def wire_bytes(payload: bytes | str, max_bytes: int) -> bytes:
    """``payload`` as bytes, or :class:`ContractError` ``too_large`` when over ``max_bytes``.

    The size is checked before anything else is done with the payload. A
    ``str`` longer than ``max_bytes`` characters is refused before it is
    encoded (each character is at least one byte); a lone surrogate in a
    ``str`` is kept as bytes that are not UTF-8, which the decoder refuses.

    >>> wire_bytes("x" * 20, 16)
    Traceback (most recent call last):
    ...
    telemetry_contract.errors.ContractError: payload: more than 16 bytes (20 characters) \
exceeds the 16-byte limit
    """
    if isinstance(payload, str):
        if len(payload) > max_bytes:
            raise ContractError(
                Reason.TOO_LARGE,
                f"more than {max_bytes} bytes ({len(payload)} characters) exceeds the "
                f"{max_bytes}-byte limit",
                field="payload",
            )
        payload = payload.encode("utf-8", "surrogatepass")
    if len(payload) > max_bytes:
        raise ContractError(
            Reason.TOO_LARGE,
            f"{len(payload)} bytes exceeds the {max_bytes}-byte limit",
            field="payload",
        )
    return bytes(payload)


def flat_change_doc(
    tag: str, timestamp: int, record: msgspec.Struct, change: str, notify: bool
) -> dict[str, Any]:
    """The flat wire form of a processor change (an alert's or an incident's):
    ``type``, ``schema_version``, ``@timestamp``, the record's fields (tuples as
    lists, as JSON reads them), ``change`` and ``notify``."""
    out: dict[str, Any] = {"type": tag, "schema_version": 1, "@timestamp": timestamp}
    for name, value in msgspec.to_builtins(record).items():
        out[name] = list(value) if isinstance(value, tuple) else value
    out["change"] = change
    out["notify"] = notify
    return out


def decode_flat_change(
    decoder: msgspec.json.Decoder[D],
    cls: type[Any],
    payload: bytes | str,
    max_bytes: int,
    fields: tuple[str, ...],
) -> tuple[D, dict[str, Any]]:
    """Decode a flat change (size checked first); returns the message and the
    values of the record's ``fields`` (:class:`ContractError` names a bad field)."""
    msg = decode_raw(decoder, wire_bytes(payload, max_bytes), cls)
    return msg, {name: getattr(msg, name) for name in fields}


def decode_raw(decoder: msgspec.json.Decoder[D], raw: bytes, cls: type[Any] | None = None) -> D:
    """``decoder.decode(raw)``, every failure turned into the :class:`ContractError` naming it.

    ``cls`` is the class being decoded, for the explanation (None: the union
    of all messages). The one place that knows what msgspec can raise.
    """
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise explain_validation(raw, str(exc), cls) from None
    except msgspec.DecodeError as exc:
        raise explain_malformed(raw, str(exc)) from None
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a JSON string
        raise _not_utf8(exc) from None
    except RecursionError:  # skipping a deep unknown value while looking for `type`
        raise too_deep() from None


def _not_utf8(exc: UnicodeDecodeError) -> ContractError:
    """The error for invalid UTF-8 inside a JSON string (msgspec raises UnicodeDecodeError)."""
    bad = exc.object[exc.start : exc.start + 1]
    shown = f"byte 0x{bad[0]:02x}" if bad else "a byte"
    return ContractError(
        Reason.NOT_JSON,
        f"not valid UTF-8 ({shown} at offset {exc.start} of a string)",
        field="payload",
    )


def _future(ts: int, now: int) -> ContractError:
    """The error for an event time too far ahead; the date is shown when it has one.

    >>> str(_future(253_402_300_800_000, 0))  # year 10000: past datetime's range
    "ts: 253402300800000 (after 9999-12-31) is 253402300800 s ahead of the receiver's \
clock (limit 300 s)"
    """
    ahead = (ts - now) // 1000
    when = "after 9999-12-31"
    if ts < _DATETIME_END_MS:
        when = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
    return ContractError(
        Reason.FUTURE_TIMESTAMP,
        f"{ts} ({when}) is {ahead} s ahead of the receiver's clock "
        f"(limit {MAX_FUTURE_MS // 1000} s)",
        field="ts",
    )


#: 10000-01-01T00:00:00Z: ``datetime`` cannot show a later time.
_DATETIME_END_MS: Final = 253_402_300_800_000


def _check_topic(message: Message, topic: str) -> None:
    parts = parse_mqtt_topic(topic)
    allowed = parts.allowed
    if type(message) not in allowed:
        names = " or ".join(repr(message_tag(t)) for t in allowed)
        raise ContractError(
            Reason.WRONG_MESSAGE_TYPE,
            f"{message_tag(type(message))!r} is not allowed on a {parts.kind.value} topic "
            f"(expected {names})",
            field="type",
        )
    if isinstance(message, DeadLetter):  # pragma: no cover - never allowed on a topic
        return
    if message.device_id != parts.device_id:
        raise ContractError(
            Reason.DEVICE_MISMATCH,
            f"{message.device_id!r} does not match the topic's device {parts.device_id!r}",
            field="device_id",
        )
    if message.site != parts.site:
        raise ContractError(
            Reason.SITE_MISMATCH,
            f"{message.site!r} does not match the topic's site {parts.site!r}",
            field="site",
        )
