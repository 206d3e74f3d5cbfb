"""Property tests: every message type round-trips; garbage never escapes as another error."""

from __future__ import annotations

import json
import math

import msgspec
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
    encode,
    mqtt_topic,
    parse_mqtt_topic,
)

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
