"""The ``stuck`` quality flag: a DS18B20 frozen at one value, end to end through the real reader."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.equipment import generate
from edge_agent.sensors import DS18B20
from edge_agent.simulate import FleetSimulator, Scenario, w1_slave_text
from edge_agent.w1 import StuckCheck
from stagekit.config import ConfigError
from telemetry_contract import AlertState, EdgeAlert, EdgeAlertKind, Quality, Reading, decode

SCENARIOS = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"
STUCK_AFTER = 30


def write(probe_dir: Path, temp_c: float) -> None:
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / "w1_slave").write_text(w1_slave_text(temp_c))


def test_stuck_check_counts_repeats_of_the_raw_value() -> None:
    chk = StuckCheck(after=2)
    assert [chk.stuck(v) for v in (1000, 1000, 1000, 1062, 1062, 1062, 1062)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        True,
    ]
    off = StuckCheck(after=0)
    assert not any(off.stuck(5) for _ in range(1000))


def test_reader_reports_stuck_keeps_the_value_and_recovers_on_one_lsb(tmp_path: Path) -> None:
    probe = tmp_path / "28-00000000beef"
    write(probe, 4.0625)
    ds = DS18B20(probe, retries=0, stuck_after=3)
    got = [ds.read() for _ in range(5)]
    assert [s.quality for s in got] == [Quality.OK] * 3 + [Quality.STUCK] * 2
    assert all(s.temp_c == 4.062 for s in got)  # the value (t=4062) is kept for the record
    assert "unchanged for 3 readings" in got[3].detail
    write(probe, 4.125)  # one LSB (0.0625 °C) is enough
    assert ds.read().quality is Quality.OK


def test_stuck_after_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"sensors\.stuck_after: must be >= 0"):
        loads_config("[sensors]\nstuck_after = -1\n")
    assert loads_config("").sensors.stuck_after == 120


def test_the_default_is_three_times_the_longest_run_of_a_healthy_probe() -> None:
    """A simulated day at 1 Hz (the freezer of seed 3 has the corpus's longest run of
    identical readings, 37): the default stuck check leaves it room three times over."""
    trace = generate("freezer", 3, duration_s=86400.0, interval_s=1.0, stuck_after=0)
    longest = run = 0
    for a, b in itertools.pairwise(trace.temps):
        run = run + 1 if a == b else 0
        longest = max(longest, run + 1)
    default = loads_config("").sensors.stuck_after
    assert longest > 10 and 3 * longest <= default <= 4 * 37, (longest, default)


def test_simulated_stuck_probe_end_to_end_through_the_agent(tmp_path: Path) -> None:
    """Simulator tree -> real discovery and reader -> agent pipeline -> outbox rows."""
    sc = Scenario.load(SCENARIOS / "stuck_probe.toml")
    sim = FleetSimulator(sc)
    out = tmp_path / "tree"
    dev = sim.devices[0]
    stuck_sid, live_sid = dev.sensor_ids
    inc = sc.incident[0]
    sim.run(out, realtime=False, steps=1)
    cfg = loads_config(
        f"""
[device]
device_id = "{dev.device_id}"
site = "{dev.site}"
state_dir = "{tmp_path / "state"}"
[sensors]
w1_root = "{sim.device_root(out, dev.device_id)}"
retry_delay_s = 0.0
stuck_after = {STUCK_AFTER}
[detector]
name = "zscore"  # the counts below are the z-score's (it flags nothing here)
[detector.params]
warmup = 20
[gpio]
pin_factory = "mock"
"""
    )
    agent = EdgeAgent(cfg, pin_factory=MockFactory())
    agent.start(mqtt=False)
    steps = int(sc.duration_s / sc.interval_s)
    try:
        for step in range(1, steps):
            sim.write_step(out, step)
            before = agent.readings_stored
            agent.sample_round()
            deadline = time.monotonic() + 30
            while agent.readings_stored < before + 2 and time.monotonic() < deadline:
                agent.process_events(0.2)
            assert agent.readings_stored == before + 2, step
            if step == int(inc.start_s + inc.duration_s / 2):
                # Mid-incident: flagged, and the fault shows on the status LED (not the alarm).
                assert agent.tracker.fault_active and not agent.outputs.alarm
        msgs = [decode(r.payload) for r in agent.outbox.next_batch(100_000)]
        seen_by_detector = agent.detector.monitors[stuck_sid].seen
    finally:
        agent.shutdown()
    readings = [m for m in msgs if isinstance(m, Reading)]
    alerts = [m for m in msgs if isinstance(m, EdgeAlert)]
    assert [r.seq for r in readings] == list(range(len(readings)))
    # The live probe jitters by at least one LSB: never stuck.
    assert all(r.quality is Quality.OK for r in readings if r.sensor_id == live_sid)
    stuck_probe = [r for r in readings if r.sensor_id == stuck_sid]
    flagged = [i for i, r in enumerate(stuck_probe) if r.quality is Quality.STUCK]
    assert flagged, "the frozen probe was never reported stuck"
    # Steps start at 1; the frozen value is first written at step start_s, so the
    # reading at index i (step i + 1) is the n-th repeat for n = step - start_s.
    first_step = flagged[0] + 1
    last_step = flagged[-1] + 1
    assert first_step == int(inc.start_s) + STUCK_AFTER
    # Until the probe moves again: right after the incident (the same seeded noise may
    # land on the frozen LSB for a few more readings, which is still no change).
    end = int(inc.start_s + inc.duration_s)
    assert end - 1 <= last_step < end + 10
    assert flagged == list(range(flagged[0], flagged[-1] + 1))  # one contiguous run
    values = {r.temp_c for i, r in enumerate(stuck_probe) if i in flagged}
    assert len(values) == 1 and None not in values  # the frozen value is kept
    assert not any(
        r.is_anomaly or r.anomaly_score is not None
        for r in stuck_probe
        if r.quality is Quality.STUCK
    )
    # Stuck readings never trained the detector: it learned exactly the ok ones
    # (none was flagged, see below, so every ok one was learned).
    ok_count = sum(r.quality is Quality.OK for r in stuck_probe)
    assert seen_by_detector == ok_count
    faults = [(a.state, a.sensor_id) for a in alerts if a.kind is EdgeAlertKind.SENSOR_FAULT]
    assert faults == [(AlertState.RAISED, stuck_sid), (AlertState.CLEARED, stuck_sid)]
    raised = next(a for a in alerts if a.state is AlertState.RAISED)
    assert "stuck" in raised.message
    # A frozen value never drives an anomaly or threshold alarm.
    assert not [a for a in alerts if a.kind is not EdgeAlertKind.SENSOR_FAULT]


def _rounds(agent: EdgeAgent, n: int) -> list[Reading]:
    for _ in range(n):
        before = agent.readings_stored
        agent.sample_round()
        deadline = time.monotonic() + 30
        while agent.readings_stored < before + 1 and time.monotonic() < deadline:
            agent.process_events(0.2)
        assert agent.readings_stored == before + 1
    msgs = [decode(r.payload) for r in agent.outbox.next_batch(1000)]
    return [m for m in msgs if isinstance(m, Reading)]


@pytest.mark.parametrize("crash", [False, True])
def test_stuck_count_survives_a_restart(tmp_path: Path, crash: bool) -> None:
    """The run of a frozen probe is stored with its readings: a restart continues it."""
    probe = tmp_path / "w1" / "28-00000000beef"
    write(probe, 4.0625)
    cfg = loads_config(
        f"""
[device]
state_dir = "{tmp_path / "state"}"
[sensors]
w1_root = "{tmp_path / "w1"}"
host_enabled = false
retries = 0
stuck_after = 5
[gpio]
pin_factory = "mock"
"""
    )
    first = EdgeAgent(cfg, pin_factory=MockFactory())
    first.start(mqtt=False)
    try:
        before = _rounds(first, 4)  # repeats 0, 1, 2, 3
    finally:
        if crash:  # like kill -9: nothing saved on the way out, only what was committed
            first.pool.close()
            first.outbox._conn.close()
            first.outbox._db = None
            first.outputs.close()
            first.events.close()
        else:
            first.shutdown()
    assert [r.quality for r in before] == [Quality.OK] * 4
    second = EdgeAgent(cfg, pin_factory=MockFactory())
    second.start(mqtt=False)
    try:
        # Repeats 4, 5, 6: stuck from the 6th equal reading on (the first agent's rows
        # are still in the outbox: no broker acknowledged them).
        after = [r for r in _rounds(second, 3) if r.seq >= 4]
    finally:
        second.shutdown()
    assert [r.quality for r in after] == [Quality.OK, Quality.STUCK, Quality.STUCK]
    assert [r.seq for r in after] == [4, 5, 6]
    # Without the stored run, the second agent would have counted from zero.
    fresh = StuckCheck(after=5)
    assert not any(fresh.stuck(4062) for _ in range(3))
