"""The parsers under fuzz: how to make an input for each, and how to run it.

A target's ``run`` returns when the parser accepted the input or refused it
the project's way (:class:`~telemetry_contract.ContractError`, a ``None`` or a
problem list, a dead letter); anything else it raises is a failure. It also
checks what the issue promises of the answer: a dead letter within its limit
that decodes as one, an error text that encodes as UTF-8, an edge alert the
agent can publish, a view the page can encode. Only public functions of the
stages are called.
"""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from telemetry_contract import (
    MESSAGE_TYPES,
    ContractError,
    DeadLetter,
    decode,
    decode_alert_change,
    decode_as,
    encode,
    kafka_topics,
)
from telemetry_contract.deadletter import DEADLETTER_LIMIT, dead_letter
from telemetry_contract.errors import MAX_FIELD_CHARS, MAX_PROBLEM_CHARS
from testsupport.hostile import Hostile, hostile_text

__all__ = ["NOW_MS", "Target", "UnexpectedLogError", "targets"]

NOW_MS: Final = 1_767_225_600_000
_TOPICS: Final = (
    "thermowatch/s1/s1-d01/telemetry",
    "thermowatch/s1/s1-d01/alert",
    "thermowatch/s1/s1-d01/status",
    "thermowatch/s1/s1-d01/config",
)
_ENC: Final = msgspec.json.Encoder()


class UnexpectedLogError(Exception):
    """A stage logged an error (a bug it caught itself) while handling the input."""


class _ErrorLog(logging.Handler):
    """Collects ERROR records: a stage that catches its own bug logs it there."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def raise_new(self) -> None:
        if self.records:
            record, self.records = self.records[0], []
            raise UnexpectedLogError(f"{record.name}: {record.getMessage()[:500]}")


@dataclass
class Target:
    """One parser: ``make(rng)`` an input, ``run(input)`` it (True: accepted, False:
    refused the project's way); ``size(input)`` in bytes."""

    name: str
    make: Callable[[random.Random], Any]
    run: Callable[[Any], bool]
    size: Callable[[Any], int]


def _check_error(err: ContractError) -> None:
    text = str(err)
    text.encode("utf-8")  # strict: raises on a lone surrogate
    assert len(text) <= MAX_FIELD_CHARS + 2 + MAX_PROBLEM_CHARS, len(text)


def _topic(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(_TOPICS)
    levels = ["thermowatch", "s1", "s1-d01", rng.choice(("telemetry", "alert", "config"))]
    levels[rng.randrange(4)] = hostile_text(rng, max_len=rng.choice((70, 2000, 70_000)))
    return "/".join(levels)


def _payload(hostile: Hostile, rng: random.Random) -> bytes | str:
    data = hostile.make()
    if rng.random() < 0.1:  # the decoders take str too
        return data.decode("utf-8", rng.choice(("surrogateescape", "replace", "ignore")))
    return data


def _len(x: Any) -> int:
    return len(x) if isinstance(x, (bytes, str)) else 0


def targets(hostiles: dict[str, Hostile]) -> list[Target]:
    """Every target, on the generators ``any`` (every message), ``device_config``,
    ``feed`` (what the web view reads) and ``ndjson`` (saved objects)."""
    hostile = hostiles["any"]
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    logging.getLogger().setLevel(logging.ERROR)  # warnings per refused input: not built
    out = [
        _contract_decode(hostile),
        _contract_decode_as(hostile),
        _contract_alert_change(hostile),
        _contract_dead_letter(hostile),
        _gateway_publish(hostile),
        _gateway_bridge(hostile, errors),
        _processor_route(hostile, errors),
        _edge_remote_config(hostiles["device_config"], errors),
        _web_fold(hostiles["feed"], errors),
        _kibana_check(hostiles["ndjson"]),
    ]
    return out


def _contract_decode(h: Hostile) -> Target:
    def make(rng: random.Random) -> tuple[bytes | str, str | None]:
        return _payload(h, rng), (_topic(rng) if rng.random() < 0.5 else None)

    def run(arg: tuple[bytes | str, str | None]) -> bool:
        try:
            decode(arg[0], topic=arg[1], now_ms=NOW_MS)
        except ContractError as err:
            _check_error(err)
            return False
        return True

    return Target("contract.decode", make, run, lambda a: _len(a[0]))


def _contract_decode_as(h: Hostile) -> Target:
    classes = list(MESSAGE_TYPES.values())

    def make(rng: random.Random) -> tuple[bytes | str, type[Any]]:
        return _payload(h, rng), rng.choice(classes)

    def run(arg: tuple[bytes | str, type[Any]]) -> bool:
        try:
            decode_as(arg[0], arg[1], now_ms=NOW_MS)
        except ContractError as err:
            _check_error(err)
            return False
        return True

    return Target("contract.decode_as (each type)", make, run, lambda a: _len(a[0]))


def _contract_alert_change(h: Hostile) -> Target:
    def run(arg: bytes | str) -> bool:
        try:
            decode_alert_change(arg)
        except ContractError as err:
            _check_error(err)
            return False
        return True

    return Target("contract.decode_alert_change", lambda rng: _payload(h, rng), run, _len)


def _contract_dead_letter(h: Hostile) -> Target:
    def make(rng: random.Random) -> tuple[bytes, str, str, str]:
        payload = h.make()
        if rng.random() < 0.002:  # now and then a big one: 1-8 MiB
            payload = rng.randbytes(1024) * rng.randint(1024, 8192)
        return payload, hostile_text(rng), _topic(rng), hostile_text(rng, max_len=300)

    def run(arg: tuple[bytes, str, str, str]) -> bool:
        payload, detail, topic, gateway = arg
        from telemetry_contract import Reason

        _, value = dead_letter(
            payload,
            Reason.NOT_JSON,
            detail,
            source_topic=topic,
            received_ms=NOW_MS,
            gateway_id=gateway,
        )
        assert len(value) <= DEADLETTER_LIMIT, f"dead letter of {len(value)} bytes"
        letter = decode(value)
        assert isinstance(letter, DeadLetter), type(letter)
        return letter.payload_encoding == "utf-8" and "payload cut" not in letter.detail

    return Target("contract.dead_letter", make, run, lambda a: len(a[0]))


def _publish_body(h: Hostile, rng: random.Random) -> tuple[int, bytes]:
    qos = rng.choice((0, 1, 1, 2))
    first = 0x30 | (qos << 1) | rng.choice((0, 1))
    if rng.random() < 0.15:
        return first, rng.randbytes(rng.randint(0, 256))
    topic = _topic(rng).encode("utf-8", "surrogatepass")[:65535]
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", rng.randrange(65536))
    props = b""
    for _ in range(rng.choice((0, 0, 1, 3))):
        pid = rng.choice((0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26, 0x26, 0x7F))
        key = hostile_text(rng, max_len=50).encode("utf-8", "surrogatepass")
        val = hostile_text(rng, max_len=50).encode("utf-8", "surrogatepass")
        props += bytes([pid]) + struct.pack("!H", len(key)) + key
        if pid == 0x26:
            props += struct.pack("!H", len(val)) + val
    plen = len(props) if rng.random() < 0.9 else rng.randrange(1 << 14)
    body += _varint(plen) + props + h.make()
    if rng.random() < 0.2:  # cut or grown
        body = body[: rng.randint(0, len(body))] if rng.random() < 0.5 else body + rng.randbytes(8)
    return first, body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _gateway_publish(h: Hostile) -> Target:
    from gateway.config import DEFAULT_MAX_PACKET_SIZE
    from gateway.wire import ProtocolError, check_publish
    from stagekit.mqttwire import decode_publish, frame

    def run(arg: tuple[int, bytes]) -> bool:
        first, body = arg
        # The fast path alone raises nothing either (check_publish would hide it).
        decode_publish(first, body)
        got = check_publish(first, body, max_packet_size=DEFAULT_MAX_PACKET_SIZE)
        if isinstance(got, ProtocolError):
            # The decoder's own catch-all: a bug, not a verdict on the input.
            assert not got.detail.startswith("undecodable"), got.detail
        else:
            topic, mid, qos, payload, user = got
            assert isinstance(topic, str) and isinstance(payload, bytes) and qos in (0, 1)
            assert 0 <= mid < 65536 and all(isinstance(k, str) for k, _ in user)
        frame(bytes([first]) + _varint(len(body)) + body)
        return not isinstance(got, ProtocolError)

    return Target(
        "gateway.check_publish (MQTT PUBLISH)",
        lambda rng: _publish_body(h, rng),
        run,
        lambda a: len(a[1]),
    )


def _gateway_bridge(h: Hostile, errors: _ErrorLog) -> Target:
    from gateway.bridge import bridge

    topics = kafka_topics("tw")

    def make(rng: random.Random) -> tuple[str, bytes, list[tuple[str, str]]]:
        props = [(hostile_text(rng, max_len=400), hostile_text(rng, max_len=400))]
        return _topic(rng), h.make(), props * rng.choice((0, 1, 20))

    def run(arg: tuple[str, bytes, list[tuple[str, str]]]) -> bool:
        topic, payload, props = arg
        rec = bridge(
            topic,
            payload,
            received_ms=NOW_MS,
            gateway_id="gw1",
            topics=topics,
            user_properties=props,
        )
        errors.raise_new()
        # The bridge's own catch-all for a bug (the record is still a dead letter).
        assert rec.error is None, rec.error
        if rec.reason is not None:
            assert len(rec.value) <= DEADLETTER_LIMIT, f"dead letter of {len(rec.value)} bytes"
        return rec.reason is None

    return Target("gateway.bridge", make, run, lambda a: len(a[1]))


def _processor_route(h: Hostile, errors: _ErrorLog) -> Target:
    from cloud_processor.app import Processor
    from cloud_processor.batches import Prepared
    from cloud_processor.config import ProcessorConfig
    from cloud_processor.testing import FakeProducer, FakeSource, FakeStore

    processor = Processor(
        ProcessorConfig(), source=FakeSource(), producer=FakeProducer(), storage=FakeStore()
    )
    route = processor.batches.route

    def make(rng: random.Random) -> bytes | None:
        return None if rng.random() < 0.01 else h.make()

    def run(value: bytes | None) -> bool:
        err = route(value, NOW_MS, Prepared())
        errors.raise_new()
        if err is not None:  # what prepare() does with it
            _, letter = dead_letter(
                value or b"",
                err.reason,
                str(err),
                source_topic="tw.telemetry",
                received_ms=NOW_MS,
            )
            assert len(letter) <= DEADLETTER_LIMIT
        return err is None

    return Target("processor.route (one record)", make, run, _len)


def _edge_remote_config(h: Hostile, errors: _ErrorLog) -> Target:
    from edge_agent.config import loads_config
    from edge_agent.detect import SensorMonitor
    from edge_agent.remote_config import RemoteConfigGate
    from edge_agent.trust import ConfigTrust
    from telemetry_contract import EdgeAlert

    current = loads_config('[device]\ndevice_id = "s1-d01"\nsite = "s1"\n')
    # Warm up: the first model of each detector imports river (~0.7 s, once per
    # process), which is no input's cost.
    for detector in ("thermal", "zscore", "context"):
        SensorMonitor(detector, {})
    # Unsigned configs allowed: the fuzzer explores what a config may hold (signatures
    # are tested in tests/unit/test_edge_signed_config.py).
    gate = RemoteConfigGate(
        topic="thermowatch/s1/s1-d01/config",
        trust=ConfigTrust(allow_unsigned=True, allow_safety_changes=True),
    )

    def run(payload: bytes) -> bool:
        out = gate.offer(payload, current=current, version=0, now_ms=NOW_MS)
        errors.raise_new()
        if isinstance(out, EdgeAlert):
            encode(out)  # the agent publishes the rejection
        return out is not None and not isinstance(out, EdgeAlert)

    return Target("edge.remote_config (offer)", lambda rng: h.make(), run, _len)


def _web_fold(h: Hostile, errors: _ErrorLog) -> Target:
    from thermowatch.web.view import FleetView, fold_record

    view = FleetView()
    count = [0]

    def make(rng: random.Random) -> tuple[str, bytes | None]:
        return rng.choice(("alerts", "status", "telemetry")), h.make()

    def run(arg: tuple[str, bytes | None]) -> bool:
        folded = fold_record(view, arg[0], arg[1], now_ms=NOW_MS)
        errors.raise_new()
        count[0] += 1
        if count[0] % 100 == 0:  # what the page is sent
            _ENC.encode(view.snapshot(NOW_MS))
            _ENC.encode(view.delta(NOW_MS))
        return folded

    return Target("web.fold_record (live feed)", make, run, lambda a: _len(a[1]))


def _kibana_check(h: Hostile) -> Target:
    from kibana.app import static_check

    def make(rng: random.Random) -> bytes:
        lines = [h.make() if rng.random() < 0.5 else rng.choice(h.golden)]
        lines += [rng.choice(h.golden) for _ in range(rng.randint(0, 3))]
        rng.shuffle(lines)
        return b"\n".join(lines)

    def run(data: bytes) -> bool:
        problems = static_check(data, prefix="thermowatch-")
        for p in problems:
            str(p).encode("utf-8")
        return not problems

    return Target("kibana.static_check (NDJSON)", make, run, len)
