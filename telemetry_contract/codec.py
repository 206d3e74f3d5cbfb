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

import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from telemetry_contract.errors import ContractError, Reason
from telemetry_contract.messages import (
    MAX_TEMP_C,
    MESSAGE_TYPES,
    MIN_TEMP_C,
    MIN_TS_MS,
    SCHEMA_VERSION,
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

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_BOUND = re.compile(r"Expected `(?P<want>[^`]+)` (?P<op>[<>]=?) (?P<bound>\S+)")
_REGEX = re.compile(r"Expected `str` matching regex '(?P<rx>.*)'")
_LENGTH = re.compile(r"Expected `(?:str|array|object)` of length (?P<rest>.*)")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)")
_FIELD_PROBLEM = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_.\[\]]*): (?P<problem>.+)$", re.S)
_TEMP_FIELDS: Final = frozenset({"temp_c", "alarm_high_c", "alarm_low_c"})


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
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        raise ContractError(
            Reason.TOO_LARGE,
            f"{len(raw)} bytes exceeds the {max_bytes}-byte limit",
            field="payload",
        )
    try:
        message: Message = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _explain_validation(raw, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _explain_malformed(raw, str(exc)) from None
    except UnicodeDecodeError as exc:  # invalid UTF-8 inside a JSON string
        raise ContractError(
            Reason.NOT_JSON,
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start} of a string)",
            field="payload",
        ) from None
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
            f"expected {_tag(cls)!r}, got {_tag(type(message))!r}",
            field="type",
        )
    return message


def _tag(cls: type[Any]) -> str:
    return str(msgspec.inspect.type_info(cls).tag)  # type: ignore[attr-defined]


def _future(ts: int, now: int) -> ContractError:
    ahead = (ts - now) / 1000.0
    when = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
    return ContractError(
        Reason.FUTURE_TIMESTAMP,
        f"{ts} ({when}) is {ahead:.0f} s ahead of the receiver's clock "
        f"(limit {MAX_FUTURE_MS // 1000} s)",
        field="ts",
    )


def _check_topic(message: Message, topic: str) -> None:
    parts = parse_mqtt_topic(topic)
    allowed = parts.allowed
    if type(message) not in allowed:
        names = " or ".join(repr(_tag(t)) for t in allowed)
        raise ContractError(
            Reason.WRONG_MESSAGE_TYPE,
            f"{_tag(type(message))!r} is not allowed on a {parts.kind.value} topic "
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


# --- the slow path: turn a msgspec error into one that names the field ------


def _explain_malformed(raw: bytes, detail: str) -> ContractError:
    """msgspec rejects NaN/Infinity as malformed JSON; tell those apart."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ContractError(Reason.NOT_JSON, f"not valid JSON ({detail})", field="payload")
    path = _find_non_finite(doc, "")
    if path is not None:
        value = _lookup(doc, path)
        shown = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return ContractError(
            Reason.NON_FINITE, f"must be a finite number, got {shown}", field=path or "payload"
        )
    return ContractError(Reason.NOT_JSON, f"not valid JSON ({detail})", field="payload")


def _find_non_finite(node: Any, path: str) -> str | None:
    if isinstance(node, float) and not math.isfinite(node):
        return path
    if isinstance(node, dict):
        for key, value in node.items():
            found = _find_non_finite(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(node, list):
        for i, value in enumerate(node):
            found = _find_non_finite(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _explain_validation(raw: bytes, text: str) -> ContractError:
    match = _AT.match(text)
    msg = match.group("msg") if match else text
    path = (match.group("path") or "").lstrip(".") if match else ""
    try:
        doc: Any = json.loads(raw)
    except ValueError:  # pragma: no cover - msgspec parsed it already
        doc = None
    value = _lookup(doc, path) if path and doc is not None else None

    if m := _MISSING.fullmatch(msg):
        return ContractError(
            Reason.MISSING_FIELD, "required field is missing", field=_join(path, m["name"])
        )
    if m := _UNKNOWN.fullmatch(msg):
        return ContractError(
            Reason.UNKNOWN_FIELD,
            f"unknown field (not in schema version {SCHEMA_VERSION})",
            field=_join(path, m["name"]),
        )
    if path == "type" and msg.startswith("Invalid value"):
        choices = ", ".join(MESSAGE_TYPES)
        return ContractError(
            Reason.UNKNOWN_MESSAGE_TYPE,
            f"unknown message type {json.dumps(value)} (expected one of {choices})",
            field="type",
        )
    if path == "schema_version":
        return ContractError(
            Reason.UNKNOWN_SCHEMA_VERSION,
            f"unsupported schema version {json.dumps(value)} (this build reads {SCHEMA_VERSION})",
            field="schema_version",
        )
    if m := _EXPECTED.fullmatch(msg):
        return ContractError(
            Reason.WRONG_TYPE,
            f"expected {m['want']}, got {m['got']}",
            field=path or "payload",
        )
    if m := _BOUND.fullmatch(msg):
        return _bound_error(path, value, m["op"], m["bound"])
    if msg == "Number out of range":
        return ContractError(Reason.OUT_OF_RANGE, "number out of range", field=path)
    if m := _REGEX.fullmatch(msg):
        return ContractError(
            Reason.INVALID_VALUE, f"must match {m['rx']}, got {json.dumps(value)}", field=path
        )
    if m := _LENGTH.fullmatch(msg):
        return ContractError(Reason.INVALID_VALUE, f"length must be {m['rest']}", field=path)
    if m := _ENUM.fullmatch(msg):
        return ContractError(
            Reason.INVALID_VALUE, f"invalid value {m['value']}{_choices(doc, path)}", field=path
        )
    if m := _FIELD_PROBLEM.match(msg):  # raised by a message's __post_init__
        field = _join(path, m["field"])
        return ContractError(Reason.INVALID_VALUE, m["problem"], field=field)
    return ContractError(Reason.INVALID_VALUE, msg, field=path or "payload")


def _bound_error(path: str, value: Any, op: str, bound: str) -> ContractError:
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _TEMP_FIELDS:
        return ContractError(
            Reason.OUT_OF_RANGE,
            f"must be between {MIN_TEMP_C} and {MAX_TEMP_C} °C, got {json.dumps(value)}",
            field=path,
        )
    if leaf == "ts" and op == ">=" and float(bound) == MIN_TS_MS:
        return ContractError(
            Reason.OUT_OF_RANGE,
            f"must be at or after {datetime.fromtimestamp(MIN_TS_MS / 1000, UTC):%Y-%m-%d} "
            f"(is the device clock set?), got {json.dumps(value)}",
            field=path,
        )
    return ContractError(
        Reason.OUT_OF_RANGE, f"must be {op} {bound}, got {json.dumps(value)}", field=path
    )


def _choices(doc: Any, path: str) -> str:
    """List the allowed values of an enum field, when the message type is known."""
    if not isinstance(doc, dict) or "." in path or "[" in path:
        return ""
    cls = MESSAGE_TYPES.get(str(doc.get("type")))
    if cls is None:
        return ""
    info = msgspec.inspect.type_info(cls)
    for field in getattr(info, "fields", ()):
        if field.encode_name != path:
            continue
        for t in _flatten(field.type):
            if isinstance(t, msgspec.inspect.EnumType):
                return " (expected one of " + ", ".join(str(e.value) for e in t.cls) + ")"
            if isinstance(t, msgspec.inspect.LiteralType):
                return " (expected one of " + ", ".join(map(str, t.values)) + ")"
    return ""


def _flatten(t: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(t, msgspec.inspect.UnionType):
        return list(t.types)
    if isinstance(t, msgspec.inspect.Metadata):
        return _flatten(t.type)
    return [t]
