"""The gateway's pure core: every golden fixture, and any input at all."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bridge import DEADLETTER_PAYLOAD_LIMIT, bridge
from telemetry_contract import DeadLetter, Reason, decode, kafka_topics

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
TOPICS = kafka_topics("tw")
NOW = 1_767_225_600_000  # 2026-01-01, the golden payloads' event time


def run(topic: str, payload: bytes, **kw: Any) -> Any:
    return bridge(topic, payload, received_ms=NOW, gateway_id="gw-1", topics=TOPICS, **kw)


#: Config and receipt topics carry cloud-to-device messages: never forwarded.
FORWARDED = [
    e for e in MANIFEST["valid"] if e["topic"] and not e["topic"].endswith(("/config", "/receipt"))
]


@pytest.mark.parametrize("entry", FORWARDED, ids=lambda e: e["file"])
def test_valid_fixture_is_forwarded_with_key_and_headers(entry: dict[str, Any]) -> None:
    payload = (FIXTURES / entry["file"]).read_bytes()
    rec = run(entry["topic"], payload)
    assert rec.reason is None
    kind = entry["topic"].rsplit("/", 1)[1]
    expected_topic = {
        "telemetry": TOPICS.telemetry,
        "alert": TOPICS.edge_alerts,
        "status": TOPICS.status,
    }[kind]
    assert rec.topic == expected_topic
    assert rec.key == b"s1-d01"
    headers = dict(rec.headers)
    assert headers["schema_version"] == b"1"
    assert headers["message_type"] == entry["type"].encode()
    assert headers["mqtt_topic"] == entry["topic"].encode()
    assert headers["gateway_id"] == b"gw-1"
    assert headers["received_ts"] == str(NOW).encode()
    assert decode(rec.value, now_ms=NOW) == decode(payload, now_ms=NOW)


#: Invalid payloads on the topics a gateway reads (a receipt topic is refused
#: as a topic first: see the test below).
REFUSED = [e for e in MANIFEST["invalid"] if not e["topic"].endswith("/receipt")]


@pytest.mark.parametrize("entry", REFUSED, ids=lambda e: e["file"])
def test_invalid_fixture_is_dead_lettered_with_its_reason(entry: dict[str, Any]) -> None:
    payload = (FIXTURES / entry["file"]).read_bytes()
    rec = run(entry["topic"], payload)
    assert rec.topic == TOPICS.deadletter
    assert rec.reason == Reason(entry["reason"])
    assert dict(rec.headers)["reason"] == entry["reason"].encode()
    letter = decode(rec.value)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == entry["reason"]
    assert letter.source_topic == entry["topic"]
    assert letter.gateway_id == "gw-1"
    assert letter.received_ts == NOW
    assert entry["field"] in letter.detail
    assert _raw(letter) == payload[: len(_raw(letter))]


def test_config_topic_is_not_forwarded() -> None:
    rec = run("thermowatch/s1/s1-d01/config", (FIXTURES / "valid/device_config.json").read_bytes())
    assert rec.reason is Reason.BAD_TOPIC


@pytest.mark.parametrize("name", ["valid/receipt.json", "invalid/receipt_overlapping_ranges.json"])
def test_receipt_topic_is_not_forwarded(name: str) -> None:
    rec = run("thermowatch/s1/s1-d01/receipt", (FIXTURES / name).read_bytes())
    assert rec.reason is Reason.BAD_TOPIC


def test_device_in_topic_must_match_payload() -> None:
    payload = (FIXTURES / "valid/reading_ok.json").read_bytes()
    rec = run("thermowatch/s1/s1-d02/telemetry", payload)
    assert rec.reason is Reason.DEVICE_MISMATCH
    assert rec.key == b"s1-d02"  # dead letters stay with the device that sent them


def test_size_limit_is_configurable() -> None:
    payload = (FIXTURES / "valid/reading_ok.json").read_bytes()
    assert run("thermowatch/s1/s1-d01/telemetry", payload, max_bytes=100).reason is (
        Reason.TOO_LARGE
    )


def test_other_topic_root() -> None:
    payload = (FIXTURES / "valid/reading_ok.json").read_bytes()
    rec = run("acme/s1/s1-d01/telemetry", payload, topic_root="acme")
    assert rec.reason is None and rec.topic == TOPICS.telemetry


def test_user_properties_become_bounded_headers() -> None:
    payload = (FIXTURES / "valid/reading_ok.json").read_bytes()
    props = [(f"k{i}", "v" * 1000) for i in range(40)]
    rec = run("thermowatch/s1/s1-d01/telemetry", payload, user_properties=props)
    user = [(k, v) for k, v in rec.headers if k.startswith("mqtt.")]
    assert len(user) == 16
    assert all(len(v) == 256 for _, v in user)


def test_invalid_utf8_inside_a_json_string_is_not_json() -> None:
    rec = run("thermowatch/s1/s1-d01/telemetry", b'{"type":"g\xe1"}')
    assert rec.reason is Reason.NOT_JSON


def test_huge_payload_dead_letter_stays_decodable() -> None:
    payload = bytes(range(256)) * 4000  # 1 MB, not UTF-8
    rec = run("thermowatch/s1/s1-d01/telemetry", payload)
    assert rec.reason is Reason.TOO_LARGE
    assert len(rec.value) <= DEADLETTER_PAYLOAD_LIMIT
    letter = decode(rec.value)
    assert letter.payload_encoding == "base64"
    assert payload.startswith(base64.b64decode(letter.payload))
    assert "payload cut to the first" in letter.detail


def _raw(letter: DeadLetter) -> bytes:
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


_KINDS = st.sampled_from(["telemetry", "alert", "status", "config", "x", ""])
_LEVEL = st.one_of(st.sampled_from(["s1", "s1-d01", "d", ""]), st.text(max_size=8))
_TOPICS = st.one_of(
    st.builds(lambda s, d, k: f"thermowatch/{s}/{d}/{k}", _LEVEL, _LEVEL, _KINDS),
    st.text(max_size=40),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)
_VALID = json.loads((FIXTURES / "valid/reading_ok.json").read_text())


def _mutated(changes: dict[str, Any], drop: list[str]) -> bytes:
    doc = {**_VALID, **changes}
    for key in drop:
        doc.pop(key, None)
    return json.dumps(doc, allow_nan=True).encode()


_PAYLOADS = st.one_of(
    st.binary(max_size=600),
    _JSON.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.builds(
        _mutated,
        st.dictionaries(st.sampled_from([*_VALID, "extra"]), _JSON, max_size=3),
        st.lists(st.sampled_from(list(_VALID)), max_size=2),
    ),
)


@settings(max_examples=1500, deadline=None)
@given(topic=_TOPICS, payload=_PAYLOADS)
def test_any_input_is_forwarded_or_dead_lettered_never_raises(topic: str, payload: bytes) -> None:
    rec = run(topic, payload)
    if rec.reason is None:
        assert rec.topic in (TOPICS.telemetry, TOPICS.edge_alerts, TOPICS.status)
        decode(rec.value, topic=topic, now_ms=NOW)  # what we forward is valid
    else:
        assert rec.topic == TOPICS.deadletter
        letter = decode(rec.value)
        assert isinstance(letter, DeadLetter)
        assert letter.reason == rec.reason.value
        assert payload.startswith(_raw(letter))
