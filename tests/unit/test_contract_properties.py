"""Property tests: every message type round-trips; garbage never escapes as another error."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry_contract import (
    AlertState,
    ContractError,
    DeadLetter,
    DeviceConfig,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    GapReason,
    Message,
    Quality,
    Reading,
    Severity,
    TopicKind,
    decode,
    decode_alert_change,
    decode_as,
    decode_incident_change,
    encode,
    mqtt_topic,
    parse_mqtt_topic,
)
from telemetry_contract.deadletter import dead_letter
from telemetry_contract.errors import MAX_FIELD_CHARS, MAX_PROBLEM_CHARS, Reason, printable
from telemetry_contract.explain import nesting_exceeds
from telemetry_contract.messages import MAX_DETECTOR_PARAMS, MESSAGE_TYPES
from telemetry_contract.schema import SCHEMA_DIR
from testsupport.hostile import CLASSES, FIXTURES, Hostile

TOPIC = "thermowatch/s1/s1-d01/telemetry"
GOLDEN_READING = (FIXTURES / "valid" / "reading_ok.json").read_text()


def _decode_as_of(cls: type[Message]) -> Callable[[bytes | str], Message]:
    return lambda raw: decode_as(raw, cls, now_ms=NOW)


NOW = 1_767_225_600_000
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
sensor_ids = st.one_of(st.just("host"), st.from_regex(r"\A28-[0-9a-f]{12}\Z"))
seqs = st.integers(0, 2**53 - 1)
tss = st.integers(1_577_836_800_000, NOW)
temps = st.floats(-55.0, 125.0, allow_nan=False)
scores = st.floats(0.0, 1e6, allow_nan=False)
text = st.text(max_size=200)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    quality = draw(st.sampled_from(Quality))
    temp = draw(temps) if quality is Quality.OK else draw(st.none() | temps)
    anomalous = quality is Quality.OK and draw(st.booleans())
    return Reading(
        device_id=draw(ids),
        sensor_id=draw(sensor_ids),
        site=draw(ids),
        seq=draw(seqs),
        ts=draw(tss),
        temp_c=temp,
        quality=quality,
        anomaly_score=draw(st.none() | scores),
        is_anomaly=anomalous,
        detector=draw(st.none() | st.text(min_size=1, max_size=64)),
    )


@st.composite
def gaps(draw: st.DrawFn) -> Gap:
    first = draw(st.integers(0, 2**40))
    return Gap(
        device_id=draw(ids),
        site=draw(ids),
        ts=draw(tss),
        first_seq=first,
        last_seq=first + draw(st.integers(0, 10**6)),
        reason=draw(st.sampled_from(GapReason)),
        message=draw(text),
    )


@st.composite
def configs(draw: st.DrawFn) -> DeviceConfig:
    low = draw(st.none() | st.floats(-55.0, 0.0))
    high = draw(st.none() | st.floats(0.5, 125.0))
    return DeviceConfig(
        device_id=draw(ids),
        site=draw(ids),
        version=draw(st.integers(1, 10**9)),
        ts=draw(tss),
        sampling_interval_s=draw(st.none() | st.floats(0.1, 3600.0)),
        alarm_high_c=high,
        alarm_low_c=low,
        detector=draw(st.none() | st.text(min_size=1, max_size=64)),
        detector_params=draw(
            st.dictionaries(
                st.text(max_size=10),
                st.one_of(
                    st.integers(-(10**6), 10**6),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(),
                    st.text(max_size=10),
                ),
                max_size=4,
            )
        ),
        buzzer_enabled=draw(st.none() | st.booleans()),
        relay_enabled=draw(st.none() | st.booleans()),
    )


messages: st.SearchStrategy[Message] = st.one_of(
    readings(),
    gaps(),
    configs(),
    st.builds(
        EdgeAlert,
        device_id=ids,
        site=ids,
        sensor_id=st.none() | sensor_ids,
        alert_id=ids,
        ts=tss,
        kind=st.sampled_from(EdgeAlertKind),
        state=st.sampled_from(AlertState),
        severity=st.sampled_from(Severity),
        message=st.text(max_size=100),
        reading_seq=st.none() | seqs,
        temp_c=st.none() | temps,
        anomaly_score=st.none() | scores,
    ),
    st.builds(
        DeviceStatus,
        device_id=ids,
        site=ids,
        ts=tss,
        state=st.sampled_from(DeviceState),
        agent_version=st.text(max_size=64),
        config_version=st.integers(0, 10**9),
        sensors=st.lists(sensor_ids, max_size=8),
        reason=st.text(max_size=100),
    ),
    st.builds(
        DeadLetter,
        reason=st.text(min_size=1, max_size=64),
        detail=st.text(max_size=500),
        source_topic=st.text(max_size=200),
        received_ts=st.integers(0, NOW),
        payload=st.text(max_size=500),
        payload_encoding=st.sampled_from(["utf-8", "base64"]),
        gateway_id=st.text(max_size=64),
    ),
)


@given(messages)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_every_message_round_trips(message: Message) -> None:
    assert decode(encode(message), now_ms=NOW) == message


@given(st.binary(max_size=400))
@settings(max_examples=400)
def test_random_bytes_raise_only_contract_error(raw: bytes) -> None:
    try:
        decode(raw, now_ms=NOW)
    except ContractError as err:
        assert err.field
        assert str(err).startswith(f"{err.field}: ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(readings(), st.text(max_size=12), json_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_readings_are_accepted_or_rejected_cleanly(
    reading: Reading, key: str, value: object
) -> None:
    doc = json.loads(encode(reading))
    doc[key] = value
    raw = json.dumps(doc).encode()  # may contain NaN / Infinity
    try:
        out = decode(raw, now_ms=NOW)
    except ContractError as err:
        assert err.field and err.problem
        return
    assert isinstance(out, (Reading, Gap, EdgeAlert, DeviceStatus, DeviceConfig, DeadLetter))
    if isinstance(out, Reading) and out.temp_c is not None:
        assert math.isfinite(out.temp_c) and -55.0 <= out.temp_c <= 125.0


@given(ids, ids, st.sampled_from(TopicKind))
def test_topic_round_trip(site: str, device: str, kind: TopicKind) -> None:
    parsed = parse_mqtt_topic(mqtt_topic(site, device, kind))
    assert (parsed.site, parsed.device_id, parsed.kind) == (site, device, kind)


def test_msgspec_rejects_nan_even_in_python_objects() -> None:
    # NaN has no JSON form, so a NaN temperature can never be encoded to the wire
    # and decoded back as a number: the codec turns it into a clear error.
    raw = json.dumps({"type": "reading", "temp_c": float("nan")}).encode()
    try:
        decode(raw, now_ms=NOW)
    except ContractError as err:
        assert err.field == "temp_c"
    else:  # pragma: no cover
        raise AssertionError("NaN accepted")
    assert msgspec.json.encode(float("nan")) == b"null"


def test_invalid_utf8_inside_a_string_is_a_contract_error() -> None:
    for raw in (b'{"type":"g\xe1"}', b'{"type":"reading","device_id":"\xe1\x80"}'):
        try:
            decode(raw, now_ms=NOW)
        except ContractError as err:
            assert (err.reason.value, err.field) == ("not_json", "payload")
            assert "UTF-8" in err.problem
        else:  # pragma: no cover
            raise AssertionError("accepted invalid UTF-8")


# --- hostile input (issue 14): every decoder returns a message or ContractError ---

HOSTILE = Hostile(random.Random(0))
ALL_DECODERS = (
    ("decode", lambda raw: decode(raw, now_ms=NOW)),
    ("decode with topic", lambda raw: decode(raw, topic=TOPIC, now_ms=NOW)),
    *((f"decode_as {c.__name__}", _decode_as_of(c)) for c in MESSAGE_TYPES.values()),
    ("decode_alert_change", decode_alert_change),
    ("decode_incident_change", decode_incident_change),
)


def _check_total(raw: bytes | str) -> None:
    """Every decoder returns or raises ContractError whose text is safe and bounded."""
    for _, decoder in ALL_DECODERS:
        try:
            decoder(raw)
        except ContractError as err:
            text = str(err)
            text.encode("utf-8")  # strict: no lone surrogate
            assert text.isprintable(), text
            assert len(text) <= MAX_FIELD_CHARS + 2 + MAX_PROBLEM_CHARS
            assert err.field and isinstance(err.reason, Reason)


@pytest.mark.parametrize("klass", CLASSES)
@given(rng=st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_payloads_give_a_message_or_contract_error(klass: str, rng: random.Random) -> None:
    HOSTILE.rng = rng
    raw = HOSTILE.make(klass)
    _check_total(raw)
    _check_total(raw.decode("utf-8", "surrogateescape"))  # str in, lone surrogates and all


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_any_str_gives_a_message_or_contract_error(text: str) -> None:
    _check_total(text)


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b'{"\\ud800": NaN}', Reason.NON_FINITE, "\\ud800"),
        (b"[" * 1000 + b"]" * 1000, Reason.WRONG_TYPE, "payload"),
        (b'{"a.b": NaN}', Reason.NON_FINITE, "a.b"),
        (b'{"a[0]": NaN}', Reason.NON_FINITE, "a[0]"),
        (b'{"x": ' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b', "type": "reading"}', None, None),
        (b'{"x": ' + b"[" * 5000 + b"NaN" + b"]" * 5000 + b"}", Reason.TOO_DEEP, "payload"),
        (b'{"type": "reading", "temp_c": ' + b"9" * 5000 + b"}", None, "temp_c"),
        ("\ud800", Reason.NOT_JSON, "payload"),
    ],
)
def test_issue_14_reproductions_are_contract_errors(
    raw: bytes | str, reason: Reason | None, field: str | None
) -> None:
    with pytest.raises(ContractError) as caught:
        decode(raw, now_ms=NOW)
    err = caught.value
    assert reason is None or err.reason is reason
    assert field is None or err.field == field
    str(err).encode("utf-8")
    # ... and the gateway's dead letter of it (this raised UnicodeEncodeError before)
    payload = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    _, value = dead_letter(payload, err.reason, str(err), source_topic="t", received_ms=1)
    assert isinstance(decode(value), DeadLetter)


def test_a_year_10000_timestamp_is_a_future_timestamp_error() -> None:
    doc = json.loads(GOLDEN_READING)
    for ts in (253_402_300_800_000, 2**53 - 1):
        doc["ts"] = ts
        with pytest.raises(ContractError) as caught:
            decode(json.dumps(doc), now_ms=NOW)
        assert (caught.value.reason, caught.value.field) == (Reason.FUTURE_TIMESTAMP, "ts")
    doc["ts"] = 2**53
    with pytest.raises(ContractError) as caught:
        decode(json.dumps(doc), now_ms=NOW)
    assert (caught.value.reason, caught.value.field) == (Reason.OUT_OF_RANGE, "ts")


@pytest.mark.parametrize("field", ["device_id", "site", "sensor_id"])
@pytest.mark.parametrize(
    "bad", ["host\n", "host\r", "ho/st", "host+", "#", "host\x00", "\u202ehost", "h" * 65, ""]
)
def test_ids_refuse_a_trailing_newline_and_any_char_outside_the_set(field: str, bad: str) -> None:
    doc = json.loads(GOLDEN_READING)
    doc[field] = bad
    with pytest.raises(ContractError) as caught:
        decode(json.dumps(doc), now_ms=NOW)
    assert caught.value.field == field
    assert "\n" not in str(caught.value)


def test_schema_file_patterns_refuse_a_trailing_newline() -> None:
    # The committed JSON Schema states the same patterns (ECMA regex, where `$`
    # is the end of input and the `(?!\n)` a no-op); Python's re reads them the
    # same way once `(?!\n)` is there, so this checks both.
    patterns = set()
    for path in SCHEMA_DIR.glob("*.schema.json"):
        patterns |= set(re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', path.read_text()))
    assert len(patterns) == 3, patterns  # device id, sensor id, signing key id
    for pattern in (json.loads(f'"{p}"') for p in patterns):
        good = "0123456789abcdef" if "0-9a-f" in pattern else "s1-d01"
        assert re.search(pattern, good)
        assert not re.search(pattern, good + "\n"), pattern


def test_detector_params_are_bounded() -> None:
    doc = json.loads((FIXTURES / "valid" / "device_config.json").read_text())
    doc["detector_params"] = {f"k{i}": i for i in range(MAX_DETECTOR_PARAMS + 1)}
    with pytest.raises(ContractError) as caught:
        decode(json.dumps(doc), now_ms=NOW)
    assert caught.value.field == "detector_params"
    doc["detector_params"] = {"k" * 65: 1}
    with pytest.raises(ContractError):
        decode(json.dumps(doc), now_ms=NOW)


@given(st.text(max_size=2000), st.integers(0, 3000))
@settings(max_examples=300)
def test_printable_escapes_and_bounds(text: str, limit: int) -> None:
    out = printable(text, max(1, limit))
    assert out.isprintable() and len(out) <= max(1, limit)
    out.encode("utf-8")


@given(st.text(st.characters(codec=None), max_size=300), st.integers(3, 400))
@settings(max_examples=300)
def test_printable_quoted_is_one_bounded_token(text: str, limit: int) -> None:
    """quote=True: a key=value log value whose inside has no bare quote to end it early."""
    out = printable(text, limit, quote=True)
    assert out.isprintable() and len(out) <= limit
    assert out.startswith('"') and out.endswith('"')
    inner = out[1:-1].replace("\\\\", "").replace('\\"', "")
    assert '"' not in inner
    out.encode("utf-8")


def test_nesting_is_measured_without_recursion() -> None:
    assert not nesting_exceeds(b'["' + b"[" * 10_000 + b'"]')
    assert nesting_exceeds(b"[" * 65)
    assert not nesting_exceeds(b"[" * 64 + b"]" * 64)
    assert nesting_exceeds(b'{"a\\"": ' * 100)


@pytest.mark.parametrize("level", ["s1-d01\n", "s1-d01\r", "s1\x00", "\u202es1", "a" * 65])
def test_topic_levels_refuse_what_the_id_pattern_refuses(level: str) -> None:
    for topic in (f"thermowatch/{level}/d/telemetry", f"thermowatch/s1/{level}/telemetry"):
        with pytest.raises(ContractError) as caught:
            parse_mqtt_topic(topic)
        assert caught.value.reason is Reason.BAD_TOPIC
        assert str(caught.value).isprintable()
    with pytest.raises(ContractError):
        mqtt_topic(level, "d", TopicKind.TELEMETRY)
