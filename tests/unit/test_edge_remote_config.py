"""Remote config: every value bounded (errors name the key), hostile payloads never escape.

The agent keeps its last good configuration whatever arrives on its retained
config topic; the rejection is logged on one bounded, printable line, stored
as a ``config_rejected`` alert and reported in the device's online status.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.detect import SensorMonitor
from edge_agent.mqtt import ConfigReceived
from edge_agent.remote_config import (
    MAX_CONFIG_BYTES,
    MAX_REASON_CHARS,
    REJECTED_LOG_LINES,
    Accepted,
    RemoteConfigGate,
)
from edge_agent.sensors import Sample
from edge_agent.trust import ConfigTrust
from stagekit.config import ConfigError
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import DeviceStatus, EdgeAlert, Quality, decode, encode, printable

NOW = int(time.time() * 1000)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
P = "28-0316a2791aff"
TOPIC = "thermowatch/s1/d1/config"
BASE = loads_config('[device]\ndevice_id = "d1"\nsite = "s1"\n')
#: These tests are about the values a config may hold: unsigned configs allowed here
#: (signatures and the safety settings: tests/unit/test_edge_signed_config.py).
UNSIGNED = ConfigTrust(allow_unsigned=True, allow_safety_changes=True)
UNSIGNED_TOML = "[remote_config]\nallow_unsigned = true\nallow_safety_changes = true\n"


def config(version: int = 2, **fields: Any) -> bytes:
    body = {"type": "device_config", "device_id": "d1", "site": "s1", "version": version}
    return json.dumps({**body, "ts": NOW, **fields}).encode()


# Bounds -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"detector": "hst"}, "detector.name: 'hst' was removed"),
        (
            {"detector": "thermal", "detector_params": {"target_false_alarms_per_week": 0}},
            "detector.params.target_false_alarms_per_week",
        ),
        ({"detector": "thermal", "detector_params": {"learning_h": 1e9}}, "params.learning_h"),
        ({"detector": "zscore", "detector_params": {"min_std": 0.0}}, "detector.params.min_std"),
        ({"detector": "zscore", "detector_params": {"alpha": 0.01}}, "params.alpha: was removed"),
        ({"detector": "zscore", "detector_params": {"window_s": 0.5}}, "params.window_s"),
        ({"detector_params": {"bins": 1}}, "detector.params.bins"),
        ({"detector_params": {"scales": "1,2,3,4,5,6,7,8,9"}}, "detector.params.scales"),
        ({"detector_params": {"threshold": 1e300}}, "detector.params.threshold"),
        ({"detector_params": {"warmup": 10**12}}, "detector.params.warmup"),
        ({"detector_params": {"h\u202eight": 1}}, "detector.params.h\\u202eight"),
        ({"detector": "nope"}, "detector.name"),
        ({"sampling_interval_s": 0.01}, "sampling_interval_s"),
        ({"alarm_high_c": 1000.0}, "alarm_high_c"),
        ({"alarm_low_c": 30.0, "alarm_high_c": 20.0}, "alarm_low_c"),
        ({"device_id": "d2"}, "device_id"),
    ],
)
def test_a_value_out_of_bounds_is_rejected_naming_the_key(fields: dict[str, Any], key: str) -> None:
    gate = RemoteConfigGate(topic=TOPIC, trust=UNSIGNED)
    got = gate.offer(config(**fields), current=BASE, version=1, now_ms=NOW)
    assert isinstance(got, EdgeAlert) and got.kind.value == "config_rejected"
    assert key in got.message, got.message
    assert gate.last_rejected is not None and key in gate.last_rejected.reason


def test_the_largest_accepted_models_build_and_run() -> None:
    """The worst case each bound allows builds and runs (memory: docs/benchmarks.md)."""
    gate = RemoteConfigGate(topic=TOPIC, trust=UNSIGNED)
    for fields in (
        {"detector": "thermal", "detector_params": {"target_false_alarms_per_week": 0.01}},
        {"detector": "zscore", "detector_params": {"window_s": 900.0, "min_std": 1e-6}},
        {
            "detector": "context",
            "detector_params": {"cap": 40000, "orders": "1,2,3,4,5,6,7,8", "bins": 1000},
        },
    ):
        got = gate.offer(config(**fields), current=BASE, version=1, now_ms=NOW)
        assert isinstance(got, Accepted), (fields, got)
        mon = SensorMonitor(got.config.detector.name, got.config.detector.params)
        for i in range(300):
            mon.observe(4.0 + 0.1 * (i % 7))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[detector]\nname = "hst"\n', "detector.name: 'hst' was removed"),
        ('[detector]\nname = "zscore"\n[detector.params]\nmin_std = 0.0\n', "params.min_std"),
        ('[detector]\nname = "zscore"\n[detector.params]\nalpha = 0.01\n', "alpha: was removed"),
        (
            '[detector]\nname = "context"\n[detector.params]\nbins = 1\n',
            "detector.params.bins: must be in 2..1000",
        ),
        ("[alarm]\nhigh_c = nan\n", "alarm.high_c: must be in -55..125, got nan"),
        ("[alarm]\nlow_c = -300.0\n", "alarm.low_c: must be in -55..125"),
        ("[alarm]\nclear_after = 1000000\n", "alarm.clear_after: must be in 1..100000"),
        ("[sampling]\ninterval_s = inf\n", "sampling.interval_s: must be in 0.1..3600"),
    ],
)
def test_the_local_file_has_the_same_bounds(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        loads_config(toml)


# The agent ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeAgent]:
    tmp = tmp_path_factory.mktemp("remote")
    shutil.copytree(FIXTURES / "ok", tmp / "w1")
    cfg = loads_config(
        f'[device]\ndevice_id = "d1"\nsite = "s1"\nstate_dir = "{tmp / "state"}"\n'
        f'[sensors]\nw1_root = "{tmp / "w1"}"\n[gpio]\npin_factory = "mock"\n' + UNSIGNED_TOML
    )
    a = EdgeAgent(cfg, pin_factory=MockFactory())
    a.start(mqtt=False)
    yield a
    a.shutdown()


def deliver(a: EdgeAgent, payload: bytes) -> None:
    """As the MQTT link does: an event on the queue, handled by the loop's step."""
    a.events.put(ConfigReceived(payload, True))
    a.process_events(0.0)


def nested(depth: int) -> bytes:
    return b'{"type":"device_config","detector_params":' + b"[" * depth + b"]" * depth + b"}"


HOSTILE = {
    "random bytes": bytes(range(256)) * 3,
    "not utf-8": b'{"type":"device_config","device_id":"\xff\xfe"}',
    "deep nesting": nested(5000),
    "NaN under a dotted key": config(detector_params={"a.b[0]": math.nan}),
    "lone surrogate key": b'{"type":"device_config","\\ud800":NaN}',
    "surrogate in a value": config(detector="\ud800x"),
    "year 10000": config(ts=253_402_300_800_000 + 1),
    "huge number": config(version=10**400),
    "huge float": b'{"type":"device_config","version":1e999}',
    "20 MiB": b"{" + b" " * (20 * 1024 * 1024) + b"}",
    "just over the cap": config(detector="x" * MAX_CONFIG_BYTES),
    "10k-character key": config(detector_params={"k" * 10_000: 1}),
    "empty object": b"{}",
    "json null": b"null",
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_payload_costs_one_bounded_log_line_and_nothing_else(
    agent: EdgeAgent, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    before = agent.config
    version = agent.config_version
    agent.remote_config.rejected_log = RateLimitedLog(lines=10)  # a fresh budget per payload
    caplog.clear()
    with caplog.at_level(logging.INFO):
        deliver(agent, payload)
    lines = [r.getMessage() for r in caplog.records if "config" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("event=config_rejected")
    assert len(lines[0]) < MAX_REASON_CHARS + 100 and lines[0].isprintable()
    assert agent.config is before and agent.config_version == version
    # Redelivered (a retained message after each reconnect): answered once only.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        deliver(agent, payload)
    assert not [r for r in caplog.records if "config" in r.getMessage()]
    # The status says so, bounded and printable; the agent goes on measuring.
    status = decode(agent.presence.online_of_connection())
    assert isinstance(status, DeviceStatus) and "config_rejected" in status.reason
    assert agent.handle_samples([Sample(P, NOW, 4.0, Quality.OK)])


def test_duplicate_keys_are_the_contracts_call_and_never_an_exception(agent: EdgeAgent) -> None:
    v = agent.config_version
    deliver(agent, config(version=v + 1)[:-1] + b',"version":%d,"version":%d}' % (v + 2, v + 3))
    assert agent.config.validate() == [] and agent.config_version in (v, v + 3)


def test_a_good_config_after_a_rejected_one_applies_and_clears_the_status(
    agent: EdgeAgent,
) -> None:
    deliver(agent, config(version=agent.config_version + 50, detector_params={"bins": 1}))
    assert "detector.params.bins" in agent.presence.reason
    deliver(agent, config(version=agent.config_version + 60, sampling_interval_s=2.0))
    assert agent.config.sampling.interval_s == 2.0 and agent.presence.reason == ""


def test_an_unexpected_failure_while_applying_is_logged_not_raised(
    agent: EdgeAgent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("line\none\ud800")

    monkeypatch.setattr(agent.pipeline, "reconfigure", broken)
    before = agent.config
    with caplog.at_level(logging.INFO):
        deliver(agent, config(version=agent.config_version + 70, sampling_interval_s=3.0))
    assert agent.config is before
    (line,) = [r.getMessage() for r in caplog.records if "config" in r.getMessage()]
    assert line == "event=config_failed error=RuntimeError: line\\none\\ud800"


# Properties --------------------------------------------------------------------------------
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["\ud800", "a/b", "+", "#", "\x00", "\u200f", "x" * 10_000, "hst", "a.b", "x[0]"]
    ),
)
hostile_number = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 14, 15, 10**18, 1e-320, 253_402_300_800_001]),
)
leaf = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text)
json_value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)
param_names = st.sampled_from(
    ["threshold", "warmup", "height", "n_trees", "window_size", "min_c", "max_c", "seed",
     "alpha", "min_std", "bins", "cap", "orders", "scales", "scale_weights", "decay", "release",
     "margin", "max_delta_c", "window_s", "nope"]
)  # fmt: skip
device_configs = st.fixed_dictionaries(
    {
        "type": st.just("device_config"),
        "device_id": st.one_of(st.just("d1"), hostile_text),
        "site": st.just("s1"),
        "version": st.one_of(st.integers(1, 2**40), hostile_number),
        "ts": st.one_of(
            st.just(NOW), st.sampled_from([253_402_300_800_001, 10**15, -1]), hostile_number
        ),
    },
    optional={
        "sampling_interval_s": st.one_of(st.floats(0.05, 4000), hostile_number),
        "alarm_high_c": hostile_number,
        "alarm_low_c": hostile_number,
        "detector": st.one_of(
            st.sampled_from(["hst", "zscore", "context", "thermal"]), hostile_text
        ),
        "detector_params": st.dictionaries(
            st.one_of(param_names, hostile_text), st.one_of(hostile_number, leaf), max_size=5
        ),
        "buzzer_enabled": leaf,
        "extra": json_value,
    },
)


def as_bytes(doc: object) -> bytes:
    # allow_nan writes NaN/Infinity tokens; surrogates become \\ud800 escapes.
    return json.dumps(doc, allow_nan=True).encode()


def assert_total(gate: RemoteConfigGate, payload: bytes) -> None:
    got = gate.offer(payload, current=BASE, version=1, now_ms=NOW)
    if isinstance(got, Accepted):
        assert got.config.validate() == []
        mon = SensorMonitor(got.config.detector.name, got.config.detector.params)
        for x in (4.0, 4.1, 60.0):
            mon.observe(x)
    elif got is not None:
        assert isinstance(got, EdgeAlert)
        encode(got)  # a rejection always makes a valid, encodable alert
        assert got.message.isprintable()


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=512), st.integers(1, 5000).map(nested)))
def test_property_random_bytes_and_deep_nesting_never_escape(payload: bytes) -> None:
    assert_total(RemoteConfigGate(topic=TOPIC, trust=UNSIGNED), payload)


@settings(max_examples=250, deadline=None)
@given(device_configs)
def test_property_hostile_device_configs_are_accepted_valid_or_rejected(doc: object) -> None:
    assert_total(RemoteConfigGate(topic=TOPIC, trust=UNSIGNED), as_bytes(doc))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        device_configs.map(as_bytes),
        json_value.map(as_bytes),
        st.binary(max_size=64),
        st.integers(1, 3000).map(nested),
    )
)
def test_property_the_agent_never_raises_and_keeps_a_valid_config(
    agent: EdgeAgent, payload: bytes
) -> None:
    deliver(agent, payload)
    assert agent.config.validate() == []
    assert agent.handle_samples([Sample(P, NOW, 4.0, Quality.OK)])


def test_a_flood_of_distinct_bad_configs_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each one is answered by an alert; only REJECTED_LOG_LINES of them by a log line."""
    gate = RemoteConfigGate(topic=TOPIC, trust=UNSIGNED)
    with caplog.at_level(logging.INFO, logger="edge_agent.remote_config"):
        alerts = [
            gate.offer(config(version=v, detector="nope"), current=BASE, version=1, now_ms=NOW)
            for v in range(2, 202)
        ]
    assert all(isinstance(a, EdgeAlert) for a in alerts)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == REJECTED_LOG_LINES
    assert gate.rejected_log.suppressed == 200 - REJECTED_LOG_LINES


def test_a_rejection_reason_is_escaped_and_bounded() -> None:
    """The gate's reason text: contract's printable, cut at MAX_REASON_CHARS."""
    why = printable("\ud800" * 1000, MAX_REASON_CHARS)
    assert len(why) == MAX_REASON_CHARS and why.startswith("\\ud800" * 49)
    why.encode("utf-8")  # no lone surrogate left
    assert printable("ok", MAX_REASON_CHARS) == "ok"


def test_the_mqtt_callback_never_raises() -> None:
    """paho re-raises a callback's exception out of the agent's loop; the callback must not."""
    import queue

    import paho.mqtt.client as paho

    from edge_agent.config import MqttSettings
    from edge_agent.mqtt import MqttLink

    events: queue.Queue[Any] = queue.Queue()
    link = MqttLink(
        MqttSettings(),
        client_id="c",
        password="",
        status_topic="s",
        config_topic=TOPIC,
        will_payload=b"",
        events=events,
    )
    for topic, payload in ((TOPIC.encode(), nested(5000)), (b"\xff\xfe/config", b"{}")):
        msg = paho.MQTTMessage(topic=topic)
        msg.payload = payload
        msg.retain = True
        link._on_message(None, None, msg)  # type: ignore[arg-type]
    got = events.get_nowait()
    assert isinstance(got, ConfigReceived) and got.payload == nested(5000)
    assert events.empty()  # the undecodable topic was dropped, not raised
