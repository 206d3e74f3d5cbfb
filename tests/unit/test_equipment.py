"""The equipment corpus: deterministic, physically plausible, faults as the agent sees them."""

from __future__ import annotations

import itertools
import statistics
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.equipment import (
    FAULT_KINDS,
    PROFILES,
    Fault,
    Trace,
    compatible_faults,
    generate,
    install_time_ms,
)
from edge_agent.equipment.physics import heater_target
from telemetry_contract import Quality

DAY = 86400.0


@cache
def _days(profile: str, days: float = 2.0, interval_s: float = 10.0, seed: int = 1) -> Trace:
    return generate(profile, seed, duration_s=days * DAY, interval_s=interval_s)


def _ok_temps(tr: Trace, lo: int = 0, hi: int | None = None) -> list[float]:
    return [t for t in tr.temps[lo:hi] if t is not None]


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    a = generate("freezer", 4, duration_s=6 * 3600.0, interval_s=5.0)
    b = generate("freezer", 4, duration_s=6 * 3600.0, interval_s=5.0)
    c = generate("freezer", 5, duration_s=6 * 3600.0, interval_s=5.0)
    assert a == b
    assert a.temps != c.temps and a.start_ms != c.start_ms


def test_install_is_on_a_working_hour_and_the_trace_starts_there() -> None:
    tr = _days("cold_room")
    assert tr.start_ms == install_time_ms(1)
    assert tr.ts_ms(6) == tr.start_ms + 60_000


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_readings_are_ds18b20_steps_as_the_kernel_prints_them(profile: str) -> None:
    temps = _ok_temps(_days(profile))
    # t= is raw * 1000 / 16 cut towards zero: every value is such a step.
    assert all(round(t * 1000) == int(round(t * 16) * 1000 / 16) for t in temps)
    assert len({round(t * 16) for t in temps}) > 10  # and they do move


@pytest.mark.parametrize(
    ("profile", "mean_lo", "mean_hi", "lo", "hi"),
    [
        ("freezer", -21.0, -17.5, -22.5, -5.0),
        ("cold_room", 1.0, 4.0, 0.0, 14.0),
        ("fridge", 2.5, 5.0, 1.5, 13.0),
        ("server_room", 21.0, 24.5, 19.5, 26.0),  # inside ASHRAE A1 recommended 18..27
    ],
)
def test_each_profile_holds_its_setpoint(
    profile: str, mean_lo: float, mean_hi: float, lo: float, hi: float
) -> None:
    temps = _ok_temps(_days(profile))
    assert mean_lo <= statistics.fmean(temps) <= mean_hi
    assert lo <= min(temps) and max(temps) <= hi


def _band(profile: str) -> tuple[float, float]:
    p = PROFILES[profile]
    return p.cut_out_c - 0.8, p.cut_in_c + 0.8


@pytest.mark.parametrize("profile", ["freezer", "cold_room", "fridge"])
def test_defrost_every_six_to_eight_hours_for_twenty_to_thirty_minutes(profile: str) -> None:
    tr = _days(profile)
    defrosts = [e for e in tr.events if e.kind == "defrost"]
    assert 5 <= len(defrosts) <= 9  # two days
    gaps = [b.start_s - a.start_s for a, b in itertools.pairwise(defrosts)]
    assert all(6 * 3600 - 1 <= g <= 8 * 3600 + 1 for g in gaps)
    assert all(20 * 60 <= e.end_s - e.start_s <= 30 * 60 for e in defrosts)


@pytest.mark.parametrize(
    ("profile", "rise_lo", "rise_hi"), [("freezer", 7, 14), ("cold_room", 6, 13), ("fridge", 2, 8)]
)
def test_defrost_warms_the_air_about_as_documented(
    profile: str, rise_lo: float, rise_hi: float
) -> None:
    tr = _days(profile)
    sp = PROFILES[profile].setpoint_c
    for e in [e for e in tr.events if e.kind == "defrost"]:
        i, j = tr.index_at(e.start_s), tr.index_at(e.end_s + 600)
        peak = max(_ok_temps(tr, i, j))
        assert rise_lo <= peak - sp <= rise_hi, (e, peak)


def test_compressor_cycles_around_the_setpoint() -> None:
    tr = _days("freezer", days=1.0, interval_s=5.0)
    sp = PROFILES["freezer"].setpoint_c
    temps = tr.temps
    busy = {
        i for e in tr.events for i in range(tr.index_at(e.start_s), tr.index_at(e.end_s + 5400))
    }
    quiet = [t for i, t in enumerate(temps) if i not in busy and t is not None]
    crossings = sum(1 for a, b in itertools.pairwise(quiet) if a < sp <= b)
    assert crossings >= 10  # a cycle every ~35 min, outside doors and defrosts
    lo, hi = _band("freezer")
    assert lo <= min(quiet) and max(quiet) <= hi


def test_doors_open_in_working_hours_mostly() -> None:
    tr = generate("cold_room", 2, duration_s=7 * DAY, interval_s=60.0)
    doors = [e for e in tr.events if e.kind == "door_open"]
    hours = [((tr.start_ms / 1000 + e.start_s) % DAY) / 3600 for e in doors]
    working = sum(7 <= h < 19 for h in hours)
    assert len(doors) > 100 and working / len(doors) > 0.8
    assert all(e.end_s - e.start_s >= 15 for e in doors)


def test_server_room_follows_its_rack_load_by_day() -> None:
    tr = generate("server_room", 3, duration_s=7 * DAY, interval_s=60.0)
    day_means: dict[bool, list[float]] = {True: [], False: []}
    for i, t in enumerate(tr.temps):
        hour = ((tr.ts_ms(i) / 1000) % DAY) / 3600
        if t is not None and (10 <= hour < 16 or hour < 4):
            day_means[10 <= hour < 16].append(t)
    assert statistics.fmean(day_means[True]) > statistics.fmean(day_means[False]) + 0.1


def test_heater_target_gives_the_asked_rise() -> None:
    p = PROFILES["freezer"]
    target, tau = heater_target(p, 25.0, 10.0)
    assert tau == 3000.0 and target > p.setpoint_c + 10


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_compatible_fault_changes_nothing_before_it(profile: str) -> None:
    base = _days(profile, days=0.5, interval_s=30.0)
    for kind in compatible_faults(profile):
        tr = generate(
            profile,
            1,
            duration_s=0.5 * DAY,
            interval_s=30.0,
            faults=[Fault(kind, start_s=6 * 3600.0, duration_s=3600.0)],
        )
        i = tr.index_at(6 * 3600.0)
        assert tr.temps[:i] == base.temps[:i], kind
        assert tr.faults[0].kind == kind and tr.faults[0].klass == FAULT_KINDS[kind].klass


def _fault(
    profile: str, kind: str, hours: float = 1.0, start: float = 12 * 3600.0, **kw: float
) -> tuple[Trace, int, int]:
    tr = generate(
        profile,
        2,
        duration_s=start + (hours + 2) * 3600,
        interval_s=10.0,
        faults=[Fault(kind, start_s=start, duration_s=hours * 3600, **kw)],
        stuck_after=30,
    )
    return tr, tr.index_at(start), tr.index_at(start + hours * 3600)


@pytest.mark.parametrize(
    ("kind", "quality"),
    [
        ("crc_error", Quality.CRC_ERROR),
        ("power_on_reset", Quality.POWER_ON_RESET),
        ("disconnected", Quality.DISCONNECTED),
    ],
)
@pytest.mark.parametrize("profile", ["freezer", "server_room"])
def test_sensor_faults_get_the_agents_own_quality(
    profile: str, kind: str, quality: Quality
) -> None:
    tr, i, j = _fault(profile, kind, hours=0.25)
    assert set(tr.qualities[i:j]) == {quality}
    assert set(tr.temps[i:j]) == {None}
    assert tr.qualities[j] is Quality.OK


def test_a_flaky_sensor_spoils_only_some_readings() -> None:
    tr, i, j = _fault("fridge", "crc_error", rate=0.3)
    bad = sum(q is Quality.CRC_ERROR for q in tr.qualities[i:j])
    assert 0.15 < bad / (j - i) < 0.45


def test_a_stuck_probe_repeats_its_value_until_the_agent_calls_it_stuck() -> None:
    tr, i, j = _fault("cold_room", "stuck")
    assert len(set(tr.temps[i:j])) == 1
    assert tr.qualities[i + 25] is Quality.OK and tr.qualities[i + 31] is Quality.STUCK
    assert set(tr.qualities[i + 31 : j]) == {Quality.STUCK}


def test_probe_pulled_into_room_air_reads_good_room_temperatures() -> None:
    tr, i, j = _fault("freezer", "probe_in_air")
    assert set(tr.qualities[i:j]) == {Quality.OK}
    assert min(_ok_temps(tr, j - 30, j)) > 15.0
    assert tr.faults[0].klass == "sensor"


@pytest.mark.parametrize(
    ("profile", "kind", "hours", "at_least"),
    [
        ("freezer", "door_left_open", 1.0, -12.0),
        ("freezer", "compressor_failure", 4.0, -12.0),
        ("freezer", "defrost_stuck", 2.0, -5.0),
        ("cold_room", "compressor_failure", 4.0, 10.0),
        ("fridge", "door_left_open", 1.0, 10.0),
        ("server_room", "hvac_failure", 1.0, 32.0),  # beyond ASHRAE A1 allowable
    ],
)
def test_temperature_faults_warm_the_air(
    profile: str, kind: str, hours: float, at_least: float
) -> None:
    tr, i, j = _fault(profile, kind, hours=hours)
    assert max(_ok_temps(tr, j - 30, j)) >= at_least
    assert max(_ok_temps(tr, i - 360, i)) < at_least  # not before


def test_a_refrigerant_leak_drifts_up_slowly() -> None:
    # Between two defrosts (seed 2: at 11.8 h and 17.8 h), the capacity gone after 30 min.
    tr, i, j = _fault("freezer", "refrigerant_leak", hours=4.0, start=13.5 * 3600)
    assert tr.faults[0].kind == "refrigerant_leak" and not [
        e for e in tr.events if e.kind == "defrost" and 13.5 * 3600 <= e.start_s < 17.5 * 3600
    ]
    half = 180
    first = statistics.fmean(_ok_temps(tr, i + half, i + 2 * half))
    last = statistics.fmean(_ok_temps(tr, j - half, j))
    assert 2.0 <= last - first <= 4.5  # about 1 K/h over the last 3 hours


def test_a_power_cut_silences_the_agent_then_the_probe_reports_its_reset() -> None:
    tr, i, j = _fault("freezer", "power_cut", hours=2.0)
    assert set(tr.qualities[i:j]) == {None}
    assert tr.qualities[j] is Quality.POWER_ON_RESET
    assert tr.faults[0].observable_s == tr.faults[0].end_s
    t = tr.temps[j + 1]
    assert t is not None and t > -15.0  # the freezer warmed while off
    srv, si, sj = _fault("server_room", "power_cut", hours=0.5)  # racks and agent on a UPS
    assert set(srv.qualities[si:sj]) == {Quality.OK}
    assert srv.faults[0].observable_s == srv.faults[0].start_s


def test_bad_faults_and_profiles_are_named() -> None:
    with pytest.raises(ValueError, match=r"fault\.kind: 'hvac_failure' does not apply"):
        generate("freezer", 1, duration_s=60.0, faults=[Fault("hvac_failure", start_s=0.0)])
    with pytest.raises(ValueError, match=r"fault\.rate"):
        Fault("crc_error", start_s=0.0, rate=2.0)
    with pytest.raises(ValueError, match=r"fault\.duration_s"):
        Fault("crc_error", start_s=0.0, duration_s=0.0)
    with pytest.raises(ValueError, match="profile: unknown equipment profile 'attic'"):
        generate("attic", 1, duration_s=60.0)
    with pytest.raises(ValueError, match="interval_s"):
        generate("fridge", 1, duration_s=60.0, interval_s=0.0)
    with pytest.raises(ValueError, match="duration_s: must be in"):
        generate("fridge", 1, duration_s=-1.0)


# The simulator plays the profiles (scenario TOML) ------------------------------------
def test_a_profile_fleet_in_a_scenario_follows_the_equipment_and_its_faults() -> None:
    from edge_agent.simulate import FleetSimulator, Scenario

    sc = Scenario.from_toml(
        """
seed = 3
interval_s = 10.0
duration_s = 7200.0
[fleet]
devices = 1
sensors_per_device = 1
profile = "freezer"
[[incident]]
kind = "compressor_failure"
start_s = 3600.0
duration_s = 3600.0
[[incident]]
kind = "crc"
start_s = 100.0
duration_s = 20.0
"""
    )
    sim = FleetSimulator(sc)
    rows = [sim.sample(0, 0, step) for step in range(720)]
    assert [r[0] for r in rows[9:13]] == ["ok", "crc", "crc", "ok"]
    values = [v for _, v in rows if v is not None]
    assert len(values) == 720
    assert all(-23.0 < v < -5.0 for v in values[:360])  # a freezer, not the 4 °C cycle
    assert values[-1] > values[359] + 3.0  # no cooling for an hour
    labels = sim.labels(0)
    assert labels[0]["kind"] == "compressor_failure" and labels[0]["anomaly"] is True
    sim.sample(0, 0, 720)  # the last step of duration_s
    with pytest.raises(ValueError, match="past the scenario's duration_s"):
        sim.sample(0, 0, 721)


@pytest.mark.parametrize(
    ("fleet", "kind", "message"),
    [
        ("", "door_left_open", r"incident\[0\]\.kind: 'door_left_open' needs a \[fleet\]"),
        ('profile = "freezer"', "hvac_failure", "'hvac_failure' does not apply to 'freezer'"),
        ('profile = "attic"', "spike", "fleet.profile: unknown equipment profile 'attic'"),
    ],
)
def test_scenario_errors_name_the_key(fleet: str, kind: str, message: str) -> None:
    from edge_agent.simulate import Scenario

    text = f'[fleet]\n{fleet}\n[[incident]]\nkind = "{kind}"\nstart_s = 0.0\nduration_s = 1.0\n'
    with pytest.raises(ValueError, match=message):
        Scenario.from_toml(text)


def test_the_freezer_week_scenario_loads_and_plays() -> None:
    from pathlib import Path

    from edge_agent.simulate import FleetSimulator, Scenario

    path = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios" / "freezer_week.toml"
    sim = FleetSimulator(Scenario.load(path))
    values = [v for _, v in (sim.sample(0, 0, step) for step in range(360)) if v is not None]
    assert sim.scenario.fleet.profile == "freezer" and len(values) == 360
    assert min(values) > -23.0 and max(values) < -5.0


def test_every_equipment_incident_kind_is_a_fault_kind_of_the_corpus() -> None:
    from edge_agent.simulate import EQUIPMENT_KINDS

    assert EQUIPMENT_KINDS.issubset(FAULT_KINDS)
    assert {k for k, f in FAULT_KINDS.items() if f.klass == "temperature"} <= EQUIPMENT_KINDS


# Any seed, any fault -----------------------------------------------------------------
_SENSOR_QUALITY = {
    "crc_error": {Quality.CRC_ERROR},
    "power_on_reset": {Quality.POWER_ON_RESET},
    "disconnected": {Quality.DISCONNECTED},
}


@settings(max_examples=30, deadline=None)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    seed=st.integers(0, 2**31),
    interval_s=st.sampled_from([5.0, 30.0, 60.0]),
    data=st.data(),
)
def test_any_seed_and_fault_keeps_the_past_and_the_agents_qualities(
    profile: str, seed: int, interval_s: float, data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(compatible_faults(profile)))
    start = data.draw(st.floats(600.0, 5400.0))
    dur = 7200.0
    clean = generate(profile, seed, duration_s=dur, interval_s=interval_s)
    tr = generate(
        profile,
        seed,
        duration_s=dur,
        interval_s=interval_s,
        faults=[Fault(kind, start_s=start, duration_s=900.0)],
    )
    i, j = tr.index_at(start), tr.index_at(start + 900.0)
    assert len(tr) == len(clean) == int(dur / interval_s)
    assert tr.temps[:i] == clean.temps[:i] and tr.qualities[:i] == clean.qualities[:i]
    assert set(clean.qualities) == {Quality.OK}
    assert all(t is not None and -55.0 <= t <= 125.0 for t in clean.temps)
    if kind in _SENSOR_QUALITY:
        assert set(tr.qualities[i:j]) == _SENSOR_QUALITY[kind]
    elif kind == "power_cut" and not PROFILES[profile].on_ups:
        assert set(tr.qualities[i:j]) == {None}
    else:
        assert None not in tr.qualities[i:j]


@pytest.mark.parametrize(
    ("profile", "lo_min", "hi_min"),
    [("freezer", 28, 42), ("cold_room", 30, 45), ("fridge", 18, 32), ("server_room", 9, 18)],
)
def test_cooling_cycles_last_as_documented(profile: str, lo_min: float, hi_min: float) -> None:
    """Median time between one cycle's rise through the middle and the next (quiet stretches)."""
    tr = _days(profile)
    busy: set[int] = set()
    for e in tr.events:  # doors and defrosts, and the air's recovery after them
        tail = 5400 if e.kind == "defrost" else 900
        busy.update(range(tr.index_at(e.start_s), tr.index_at(e.end_s + tail)))
    temps = _ok_temps(tr)
    mid = statistics.median(temps)
    rises, low = [], False
    for i, t in enumerate(temps):
        if t < mid - 0.3:
            low = True
        elif t > mid + 0.3 and low:
            rises.append(i)
            low = False
    periods = [
        (b - a) * tr.interval_s / 60
        for a, b in itertools.pairwise(rises)
        if busy.isdisjoint(range(a, b + 1))
    ]
    assert len(periods) >= 10
    assert lo_min <= statistics.median(periods) <= hi_min


@settings(max_examples=200, deadline=None)
@given(st.floats(-55.0, 125.0))
def test_the_corpus_reads_what_the_simulators_w1_file_says(temp: float) -> None:
    """One quantization for both: the corpus's values and the fake sysfs file the agent parses."""
    from edge_agent.simulate import w1_slave_text
    from edge_agent.w1 import ds18b20_millic, parse_w1_slave

    crc_ok, millic = parse_w1_slave(w1_slave_text(temp))
    assert crc_ok
    assert millic == ds18b20_millic(temp)
