"""The agent's per-reading pipeline without a broker: judge, alarm, store; model persistence."""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.detect import SensorMonitor
from edge_agent.detectors.zscore import ZScoreModel
from edge_agent.sensors import Sample
from telemetry_contract import EdgeAlert, Quality, Reading, decode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
TS = 1_767_225_600_000
P = "28-0316a2791aff"


def agent(tmp_path: Path) -> EdgeAgent:
    root = tmp_path / "w1"
    if not root.exists():
        shutil.copytree(FIXTURES / "ok", root)
    cfg = loads_config(
        f"""
[device]
device_id = "d1"
site = "s1"
state_dir = "{tmp_path / "state"}"
[sensors]
w1_root = "{root}"
[detector]
name = "zscore"
[detector.params]
warmup = 5
[gpio]
pin_factory = "mock"
"""
    )
    a = EdgeAgent(cfg, pin_factory=MockFactory())
    a.start(mqtt=False)
    return a


def stored(a: EdgeAgent) -> list[object]:
    return [decode(r.payload, now_ms=TS) for r in a.outbox.next_batch(10_000)]


def test_pipeline_stores_verdicts_and_drives_the_alarm(tmp_path: Path) -> None:
    a = agent(tmp_path)
    try:
        for i in range(10):
            a.handle_samples([Sample(P, TS + i, 4.0 + 0.01 * (i % 2), Quality.OK)])
        a.handle_samples([Sample(P, TS + 20, None, Quality.CRC_ERROR, "t=99999 crc=NO")])
        a.handle_samples([Sample(P, TS + 21, None, Quality.POWER_ON_RESET)])
        assert not a.outputs.alarm  # faults are not temperatures
        assert a.detector.monitors[P].seen == 10
        a.handle_samples([Sample(P, TS + 30, 40.0, Quality.OK)])
        assert a.outputs.alarm
        assert a.outputs.alarm_led.value == 1 and a.outputs.buzzer.value == 1
        msgs = stored(a)
        readings = [m for m in msgs if isinstance(m, Reading)]
        assert [r.seq for r in readings] == list(range(13))
        assert [r.quality for r in readings[10:12]] == [Quality.CRC_ERROR, Quality.POWER_ON_RESET]
        assert readings[-1].is_anomaly and readings[-1].detector == "zscore"
        assert readings[0].anomaly_score is None  # warm-up: no verdict
        alerts = [
            (m.kind.value, m.state.value, m.reading_seq) for m in msgs if isinstance(m, EdgeAlert)
        ]
        # Two failed reads in a row are not a sensor fault (alarm.fault_after = 3).
        assert alerts == [("anomaly", "raised", 12)]
    finally:
        a.shutdown()


def test_model_is_saved_on_shutdown_and_restored_at_start(tmp_path: Path) -> None:
    a = agent(tmp_path)
    for i in range(8):
        a.handle_samples([Sample(P, TS + i, 4.0, Quality.OK)])
    a.shutdown()
    assert (tmp_path / "state" / "detector.pickle").exists()
    b = agent(tmp_path)
    try:
        assert b.detector.monitors[P].seen == 8
        # The seq continues after the restart.
        assert b.handle_samples([Sample(P, TS + 9, 4.0, Quality.OK)]) == [8]
    finally:
        b.shutdown()


def test_a_state_of_the_previous_zscore_is_discarded_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The previous zscore's model: river's EW mean and variance, saved with its alpha.
    old = ZScoreModel.__new__(ZScoreModel)
    old.__dict__.update(_mean=4.0, _var=0.01, _min_var=0.01)
    mon = SensorMonitor("zscore")
    mon._model, mon.seen = old, 500
    params = {"threshold": 6.0, "warmup": 30, "alpha": 0.01, "min_std": 0.1}
    state = {"name": "zscore", "params": params, "profile": "generic", "monitors": {P: mon}}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "detector.pickle").write_bytes(pickle.dumps(state))
    with caplog.at_level(logging.WARNING):
        a = agent(tmp_path)
    try:
        assert "event=detector_state_discarded" in caplog.text
        assert "made with other parameters" in caplog.text
        assert a.detector.monitors == {}
        a.handle_samples([Sample(P, TS, 4.0, Quality.OK)])  # warms up again, no crash
        assert a.detector.monitors[P].seen == 1
    finally:
        a.shutdown()


def test_no_readings_before_the_clock_is_set(tmp_path: Path) -> None:
    """A Pi without RTC boots in 1970: no reading may carry such a timestamp."""
    root = tmp_path / "w1"
    shutil.copytree(FIXTURES / "ok", root)
    cfg = loads_config(
        f'[device]\nstate_dir = "{tmp_path / "s"}"\n[sensors]\nw1_root = "{root}"\n'
        '[gpio]\npin_factory = "mock"\n'
    )
    clock = [1_000]
    a = EdgeAgent(cfg, pin_factory=MockFactory(), clock_ms=lambda: clock[0])
    a.start(mqtt=False)
    try:
        a.sample_round()
        a.process_events(0.5)
        assert a.readings_stored == 0
        clock[0] = TS
        a.sample_round()
        deadline = time.monotonic() + 10
        while a.readings_stored < 2 and time.monotonic() < deadline:
            a.process_events(0.1)
        assert a.readings_stored == 2
    finally:
        a.shutdown()
