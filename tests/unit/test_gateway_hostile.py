"""Hostile input at the gateway: each class is dead-lettered, acknowledged after Kafka, logged once.

Issue 14: a 14-byte payload (``{"\\ud800": NaN}``) made the dead-letter
encoding raise outside the bridge's error handling, so the message was never
acknowledged and held a Receive-Maximum slot for good. Here every hostile
class goes through the real bridge and the gateway's run loop (fake adapters):
no exception escapes, the message is acknowledged only once its dead letter is
written, and a flood of rejections gives one log line per reason and interval.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.app
from gateway.bridge import DEADLETTER_PAYLOAD_LIMIT, bridge
from gateway.ports import Incoming
from telemetry_contract import DeadLetter, decode, kafka_topics
from tests.unit.test_gateway_app import config, running, settle

TOPICS = kafka_topics("tw")
NOW = 1_767_225_600_000
TOPIC = "thermowatch/s1/d1/telemetry"


def _reading(**changes: Any) -> bytes:
    doc = {
        "type": "reading",
        "schema_version": 1,
        "device_id": "d1",
        "sensor_id": "host",
        "site": "s1",
        "seq": 1,
        "ts": NOW,
        "temp_c": 20.0,
    }
    doc.update(changes)
    return json.dumps(doc).encode()


#: (name, topic, payload): every hostile class of issue 14 that reaches the gateway.
HOSTILE: list[tuple[str, str, bytes]] = [
    ("surrogate_key_nan", TOPIC, b'{"\\ud800": NaN}'),
    ("surrogate_in_reading", TOPIC, _reading(sensor_id="\ud800").replace(b"\\ud800", b"\\ud800")),
    ("deep_array", TOPIC, b"[" * 1000 + b"]" * 1000),
    ("deep_object", TOPIC, b'{"a":' * 1000 + b"1" + b"}" * 1000),
    ("year_10000", TOPIC, _reading(ts=253_402_300_800_001)),
    ("nan_under_dotted_key", TOPIC, b'{"a.b": NaN}'),
    ("nan_under_bracket_key", TOPIC, b'{"a[0]": NaN}'),
    ("device_id_trailing_newline", "thermowatch/s1/d1\n/telemetry", _reading(device_id="d1\n")),
    ("device_id_newline_in_payload", TOPIC, _reading(device_id="d1\n")),
    ("oversize", TOPIC, b'{"x":"' + b"a" * 70_000 + b'"}'),
    ("invalid_utf8", TOPIC, b'{"type":"\xff\xfe"}'),
    ("invalid_utf8_raw", TOPIC, b"\xed\xa0\x80\xc3"),
    ("surrogate_topic", "thermowatch/s1/\ud800/telemetry", _reading()),
    ("nul_and_rtl_topic", "thermowatch/s\x00/d\u202e1/telemetry", _reading()),
    ("empty", TOPIC, b""),
]


@pytest.mark.parametrize(
    ("topic", "payload"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_each_hostile_class_becomes_a_bounded_decodable_dead_letter(
    topic: str, payload: bytes
) -> None:
    rec = bridge(topic, payload, received_ms=NOW, gateway_id="gw-1", topics=TOPICS)
    assert rec.topic == TOPICS.deadletter and rec.reason is not None
    assert len(rec.value) <= DEADLETTER_PAYLOAD_LIMIT
    letter = decode(rec.value)
    assert isinstance(letter, DeadLetter) and letter.reason == rec.reason.value
    for name, value in rec.headers:  # Kafka encodes header names as UTF-8
        name.encode("utf-8")
        assert isinstance(value, bytes)


def test_a_dead_letter_that_cannot_be_built_falls_back_to_a_minimal_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    # gateway.bridge the attribute is the function: patch the module itself.
    monkeypatch.setattr(importlib.import_module("gateway.bridge"), "dead_letter_of", broken)
    rec = bridge(TOPIC, b'{"\\ud800": NaN}', received_ms=NOW, gateway_id="gw", topics=TOPICS)
    assert rec.topic == TOPICS.deadletter and rec.error == "dead letter: UnicodeEncodeError"
    letter = decode(rec.value)
    assert isinstance(letter, DeadLetter) and letter.payload_encoding == "base64"


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_message_is_acked_only_after_its_dead_letter_is_written(
    hostile: tuple[str, str, bytes],
) -> None:
    _, topic, payload = hostile
    async with running(config()) as (gw, sink, mqtt):
        mqtt.deliver(Incoming(topic, payload, 7, 1, 1, ()))
        await settle()
        assert [r.topic for r, _ in sink.pending] == [gw.topics.deadletter]
        assert mqtt.acked == [] and gw.in_flight == 1
        sink.confirm(0)
        await settle()
        assert mqtt.acked == [7] and gw.in_flight == 0


async def test_a_bridge_that_raises_still_gives_a_dead_letter_and_an_ack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(gateway.app, "bridge", broken)
    async with running(config()) as (gw, sink, mqtt):
        mqtt.deliver(Incoming(TOPIC, _reading(), 3, 1, 1, ()))
        await settle()
        record = sink.pending[0][0]
        assert record.topic == gw.topics.deadletter and record.error == "bridge: RuntimeError"
        assert isinstance(decode(record.value), DeadLetter)
        sink.confirm(0)
        await settle()
        assert mqtt.acked == [3]
        assert gw.metrics.unexpected_errors.labels("bridge")._value.get() == 1


async def test_more_hostile_messages_than_the_window_never_stall_the_others() -> None:
    """1,200 surrogate/NaN payloads (window 1,000) then readings: all written, all acked."""
    async with running(config()) as (gw, sink, mqtt):
        mid = 0
        for i in range(1_200 + 50):
            mid += 1
            payload = b'{"\\ud800": NaN}' if i < 1_200 else _reading(seq=i)
            mqtt.deliver(Incoming(TOPIC, payload, mid, 1, 1, ()))
            if mqtt.paused:  # the broker would wait: Kafka confirms, the window drains
                for j in range(len(mqtt.acked), len(sink.pending)):
                    sink.confirm(j)
                await settle()
        for j in range(len(mqtt.acked), len(sink.pending)):
            sink.confirm(j)
        await settle()
        assert mqtt.acked == list(range(1, mid + 1))
        kinds = [r.topic for r, _ in sink.pending]
        assert kinds.count(gw.topics.deadletter) == 1_200
        assert kinds.count(gw.topics.telemetry) == 50
        assert gw.in_flight_max == gw.config.mqtt.receive_maximum  # reached, never more
        assert gw.metrics.registry.get_sample_value("thermowatch_gateway_in_flight_max") == 1_000


async def test_rejections_log_one_short_sanitised_line_per_reason_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hostile_topic = "thermowatch/s1/\ud800\n" + "x" * 5000 + "/telemetry"
    caplog.set_level(logging.INFO, logger="gateway.app")
    async with running(config()) as (gw, sink, mqtt):
        for mid in range(1, 101):
            mqtt.deliver(Incoming(hostile_topic, b"\xff", mid, 1, 1, ()))
        await settle()
        for j in range(100):
            sink.confirm(j)
        await settle()
        assert len(mqtt.acked) == 100
        assert gw.metrics.deadlettered.labels("bad_topic")._value.get() == 100
    lines = [r for r in caplog.records if "event=dead_letter" in r.getMessage()]
    assert len(lines) == 1
    text = lines[0].getMessage()
    assert lines[0].exc_info is None and len(text) < 400
    assert "\n" not in text and "\ud800" not in text and "\\ud800\\n" in text


# Every code point, lone surrogates, NUL and bidi marks included (st.text leaves surrogates out).
_ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None)
_TRICKY = st.one_of(
    st.text(_ANY_CHAR, max_size=12),
    st.sampled_from(
        ["\ud800", "\udfff", "\x00", "\u202e", "a.b", "a[0]", "s1-d01\n", "+", "#", "/"]
    ),
)
_VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**30, 253_402_300_800_001]),
    st.integers(),
    st.text(_ANY_CHAR, max_size=8),
)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"NaN" + b"}" * depth


_HOSTILE_PAYLOADS = st.one_of(
    st.dictionaries(_TRICKY, _VALUES, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda k, v: _reading(**{k: v}),
        st.sampled_from(["device_id", "sensor_id", "site", "ts", "temp_c", "seq"]),
        _VALUES,
    ),
    st.integers(1, 3000).map(_nested),
    st.binary(max_size=64),
)
_HOSTILE_TOPICS = st.one_of(
    st.just(TOPIC),
    st.builds(lambda s, d: f"thermowatch/{s}/{d}/telemetry", _TRICKY, _TRICKY),
)


@settings(max_examples=300, deadline=None)
@given(topic=_HOSTILE_TOPICS, payload=_HOSTILE_PAYLOADS)
def test_unicode_tricks_nan_and_deep_nesting_never_raise_and_stay_writable(
    topic: str, payload: bytes
) -> None:
    rec = bridge(topic, payload, received_ms=NOW, gateway_id="gw-1", topics=TOPICS)
    if rec.reason is not None:
        assert rec.topic == TOPICS.deadletter and len(rec.value) <= DEADLETTER_PAYLOAD_LIMIT
        assert isinstance(decode(rec.value), DeadLetter)
    for name, value in rec.headers:  # what Kafka's batch builder needs
        name.encode("utf-8")
        assert isinstance(value, bytes)
    assert rec.key is None or isinstance(rec.key, bytes)


def test_the_fallback_letter_stays_within_the_dead_letter_limit() -> None:
    # Four-byte characters in every text and a payload far over the limit.
    from gateway.bridge import fallback_dead_letter
    from telemetry_contract import Reason
    from telemetry_contract.deadletter import DEADLETTER_LIMIT

    emoji = "\U0001f525" * 5000
    rec = fallback_dead_letter(
        f"thermowatch/s1/{emoji}/telemetry",
        b"\xff" * 1_000_000,
        Reason.NOT_JSON,
        emoji,
        received_ms=NOW,
        gateway_id=emoji,
        topics=TOPICS,
        error="dead letter: RuntimeError",
    )
    assert len(rec.value) <= DEADLETTER_LIMIT
    assert isinstance(decode(rec.value), DeadLetter)
