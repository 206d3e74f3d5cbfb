"""Reorder stage of the fleet rules: readings of a device are judged in seq order.

Two gateways can hand a device's consecutive readings to Kafka in either order;
the rules judge only the newest reading, so without this stage an anomalous
reading overtaken by the next one opened no alert (pure, no services).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.config import AlertSettings, ProcessorConfig, RulesConfig
from cloud_processor.rules import FleetRules
from stagekit.config import ConfigError, loads
from telemetry_contract import AlertChange, Gap, GapReason, Quality, Reading

T0 = 1_767_225_600_000
S = 1000


def reading(seq: int, temp: float, device: str = "d1", *, ts_s: float | None = None) -> Reading:
    return Reading(
        device_id=device,
        sensor_id="host",
        site="s1",
        seq=seq,
        ts=T0 + int((seq if ts_s is None else ts_s) * S),
        temp_c=temp,
    )


def make(**kw: float | int) -> FleetRules:
    cfg = {"threshold_high_c": 8.0, "min_duration_s": 0.0, "reorder_wait_ms": 200, **kw}
    return FleetRules(RulesConfig(**cfg), AlertSettings())  # type: ignore[arg-type]


def kinds(changes: list[AlertChange]) -> list[tuple[str, str, int]]:
    return [(c.kind.value, c.alert.rule, (c.alert.updated_at - T0) // S) for c in changes]


def test_swapped_pair_with_a_spike_is_alerted_exactly_once() -> None:
    rules = make()
    now = T0 + 5 * S
    assert rules.on_reading(reading(1, 5.0), now_ms=now) == []
    # seq 3 (normal) overtook seq 2 (the spike): held, nothing judged yet
    assert rules.on_reading(reading(3, 5.0), now_ms=now) == []
    assert rules.is_held("d1", 3)
    out = rules.on_reading(reading(2, 9.5), now_ms=now + 10)
    assert kinds(out) == [("opened", "threshold_high", 2), ("resolved", "threshold_high", 3)]
    assert out[0].notify and out[0].alert.alert_id == f"d1.threshold_high.{T0 + 2 * S}"
    # QoS 1 redeliveries of both, and a later tick: nothing more
    again = rules.on_reading(reading(2, 9.5), now_ms=now + 20)
    again += rules.on_reading(reading(3, 5.0), now_ms=now + 20)
    assert again + rules.tick(now + 10 * S) == []
    assert rules.held_count == 0


def test_without_the_stage_the_overtaken_spike_is_missed() -> None:
    """The bug this stage fixes (wait 0 = judge at once, as before)."""
    rules = make(reorder_wait_ms=0)
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    assert rules.on_reading(reading(3, 5.0), now_ms=T0) == []
    assert rules.on_reading(reading(2, 9.5), now_ms=T0) == []  # older than seq 3: late
    assert rules.held_count == 0


def test_in_order_stream_is_judged_in_the_same_call() -> None:
    rules = make()
    for seq in range(1, 6):
        assert rules.on_reading(reading(seq, 5.0), now_ms=T0 + seq * S) == []
        assert rules.held_count == 0
    out = rules.on_reading(reading(6, 9.5), now_ms=T0 + 6 * S)
    assert kinds(out) == [("opened", "threshold_high", 6)]
    assert rules.next_release_ms() is None


def test_missing_seq_that_never_arrives_is_given_up_at_a_tick() -> None:
    rules = make(reorder_wait_ms=200)
    now = T0 + 10 * S
    rules.on_reading(reading(1, 5.0), now_ms=now)
    assert rules.on_reading(reading(3, 9.5), now_ms=now) == []
    assert rules.on_reading(reading(4, 5.0), now_ms=now + 50) == []
    assert rules.next_release_ms() == now + 200
    assert rules.tick(now + 199) == []
    assert rules.held_count == 2
    out = rules.tick(now + 200)
    assert kinds(out) == [("opened", "threshold_high", 3), ("resolved", "threshold_high", 4)]
    assert rules.held_count == 0 and rules.next_release_ms() is None
    assert rules.given_up == 1
    assert rules.take_given_up() == [("d1", 2, 2)]
    assert rules.take_given_up() == []  # taken once
    # seq 2 turns up after all: judged late, as before the stage (no threshold on
    # a reading older than the newest one), and never twice
    assert rules.on_reading(reading(2, 5.0), now_ms=now + 300) == []
    assert rules.on_reading(reading(5, 5.0), now_ms=now + 300) == []  # in order again
    assert rules.held_count == 0


def test_given_up_seq_still_counts_for_the_rules_that_accept_late_readings() -> None:
    rules = make(fault_storm_count=2, fault_storm_window_s=60.0)
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    faulty = Reading(
        device_id="d1",
        sensor_id="host",
        site="s1",
        seq=3,
        ts=T0 + 3 * S,
        quality=Quality.CRC_ERROR,
        temp_c=None,
    )
    rules.on_reading(faulty, now_ms=T0)
    rules.tick(T0 + 1000)  # seq 2 given up, seq 3 judged
    late_fault = Reading(
        device_id="d1",
        sensor_id="host",
        site="s1",
        seq=2,
        ts=T0 + 2 * S,
        quality=Quality.CRC_ERROR,
        temp_c=None,
    )
    out = rules.on_reading(late_fault, now_ms=T0 + 1100)
    assert [c.alert.rule for c in out] == ["sensor_fault_storm"]


def test_gap_covering_the_hole_releases_at_once() -> None:
    rules = make()
    rules.on_reading(reading(10, 5.0), now_ms=T0)
    assert rules.on_reading(reading(16, 9.5), now_ms=T0) == []  # 11..15 missing
    assert rules.on_reading(reading(17, 5.0), now_ms=T0) == []
    gap = Gap(
        device_id="d1",
        site="s1",
        ts=T0 + 11 * S,
        first_seq=11,
        last_seq=15,
        reason=GapReason.OUTBOX_FULL,
    )
    out = rules.on_gap(gap, now_ms=T0 + 5)
    assert [(c.kind.value, c.alert.rule) for c in out] == [
        ("opened", "data_gap"),
        ("resolved", "data_gap"),  # seq 16 is past the gap
        ("opened", "threshold_high"),
        ("resolved", "threshold_high"),
    ]
    assert rules.held_count == 0
    assert kinds(rules.on_reading(reading(18, 9.5), now_ms=T0 + 6)) == [
        ("opened", "threshold_high", 18)
    ]


def test_gap_ahead_of_a_hole_is_remembered() -> None:
    rules = make()
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    gap = Gap(
        device_id="d1", site="s1", ts=T0, first_seq=3, last_seq=4, reason=GapReason.OUTBOX_EXPIRED
    )
    rules.on_gap(gap, now_ms=T0)
    assert rules.on_reading(reading(5, 5.0), now_ms=T0) == []  # still waiting for seq 2
    assert rules.is_held("d1", 5)
    rules.on_reading(reading(2, 5.0), now_ms=T0)  # 2, then 3..4 skipped, then 5
    assert rules.held_count == 0
    assert rules.on_reading(reading(6, 9.5), now_ms=T0) != []


def test_gap_over_readings_already_held_still_judges_them() -> None:
    """A Gap that contradicts what arrived cannot strand held readings."""
    rules = make()
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    rules.on_reading(reading(4, 9.5), now_ms=T0)  # 2, 3 missing
    gap = Gap(
        device_id="d1", site="s1", ts=T0, first_seq=2, last_seq=5, reason=GapReason.OUTBOX_FULL
    )
    out = rules.on_gap(gap, now_ms=T0)
    assert ("opened", "threshold_high", 4) in kinds(out)
    assert rules.held_count == 0 and rules.next_release_ms() is None
    assert rules.tick(T0 + 10 * S) == []


def test_duplicates_are_not_judged_twice() -> None:
    rules = make(fault_storm_count=2, fault_storm_window_s=60.0)
    faulty = Reading(
        device_id="d1",
        sensor_id="host",
        site="s1",
        seq=1,
        ts=T0,
        quality=Quality.CRC_ERROR,
        temp_c=None,
    )
    assert rules.on_reading(faulty, now_ms=T0) == []
    assert rules.on_reading(faulty, now_ms=T0 + 1) == []  # two faults would be a storm
    held = Reading(
        device_id="d1",
        sensor_id="host",
        site="s1",
        seq=3,
        ts=T0 + 2,
        quality=Quality.CRC_ERROR,
        temp_c=None,
    )
    assert rules.on_reading(held, now_ms=T0) == []
    assert rules.on_reading(held, now_ms=T0) == []  # duplicate of a held reading
    assert rules.held_count == 1
    out = rules.tick(T0 + 1000)
    assert [c.alert.rule for c in out] == ["sensor_fault_storm"]  # counted once each


def test_per_device_bound_gives_up_the_oldest_hole() -> None:
    rules = make(reorder_max_held_per_device=3, reorder_wait_ms=60_000)
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    for seq in (3, 4, 5):
        assert rules.on_reading(reading(seq, 5.0), now_ms=T0) == []
    assert rules.held_count == 3
    out = rules.on_reading(reading(6, 9.5), now_ms=T0)  # a fourth: seq 2 is given up
    assert kinds(out) == [("opened", "threshold_high", 6)]
    assert rules.held_count == 0


def test_global_bound_releases_the_device_waiting_longest() -> None:
    rules = make(reorder_max_held=4, reorder_max_held_per_device=4, reorder_wait_ms=60_000)
    for i, device in enumerate(("a", "b", "c")):
        rules.on_reading(reading(1, 5.0, device), now_ms=T0)
        rules.on_reading(reading(3, 9.5, device), now_ms=T0 + i)  # each misses seq 2
    assert rules.held_count == 3
    rules.on_reading(reading(4, 9.5, "c"), now_ms=T0 + 10)
    assert rules.held_count == 4
    out = rules.on_reading(reading(4, 9.5, "b"), now_ms=T0 + 11)  # a fifth
    assert [c.alert.device_id for c in out] == ["a"]  # held since T0: the oldest
    assert rules.held_count == 4 and not rules.is_held("a", 3)


@given(
    st.lists(st.sampled_from([5.0, 5.5, 9.5, 6.0]), min_size=2, max_size=40),
    st.integers(0, 2**32),
)
@settings(max_examples=100, deadline=None)
def test_local_reordering_gives_the_in_order_alerts(temps: list[float], salt: int) -> None:
    """Any shuffle that moves a reading by a few places yields the alerts of the
    in-order stream (same ids, same kinds, each once)."""
    stream = [reading(i + 1, t) for i, t in enumerate(temps)]
    expected = make(reorder_wait_ms=60_000)
    want = [c for r in stream for c in expected.on_reading(r, now_ms=T0)]
    rng = random.Random(salt)
    # the first reading comes first: the stage knows where the device stands
    # (after a restart, a reading overtaken by the first one seen is judged late)
    keys = [i + rng.uniform(0, 3) for i in range(len(stream) - 1)]
    rest = sorted(zip(keys, stream[1:], strict=True), key=lambda p: p[0])
    shuffled = stream[:1] + [r for _, r in rest]
    shuffled += rng.sample(stream, k=min(3, len(stream)))  # redeliveries
    rules = make(reorder_wait_ms=60_000)
    got = [c for r in shuffled for c in rules.on_reading(r, now_ms=T0)]
    assert [(c.kind, c.alert.alert_id, c.alert.version) for c in got] == [
        (c.kind, c.alert.alert_id, c.alert.version) for c in want
    ]
    assert rules.held_count == 0


def test_seq_counter_restart_is_judged_at_once() -> None:
    rules = make()
    rules.on_reading(reading(500, 5.0, ts_s=10), now_ms=T0)
    out = rules.on_reading(reading(0, 9.5, ts_s=20), now_ms=T0)  # outbox lost, newer data
    assert kinds(out) == [("opened", "threshold_high", 20)]
    assert rules.on_reading(reading(1, 5.0, ts_s=21), now_ms=T0) != []  # in order again


def test_release_held_judges_everything_in_seq_order() -> None:
    rules = make(reorder_wait_ms=60_000)
    rules.on_reading(reading(1, 5.0), now_ms=T0)
    rules.on_reading(reading(4, 5.0), now_ms=T0)
    rules.on_reading(reading(3, 9.5), now_ms=T0)
    out = rules.release_held(T0)
    assert kinds(out) == [("opened", "threshold_high", 3), ("resolved", "threshold_high", 4)]
    assert rules.held_count == 0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[rules]\nreorder_wait_ms = -1\n", "rules.reorder_wait_ms: must be between 0 and 60000"),
        ("[rules]\nreorder_max_held = 0\n", "rules.reorder_max_held: must be at least 1"),
        (
            "[rules]\nreorder_max_held = 10\nreorder_max_held_per_device = 11\n",
            "rules.reorder_max_held_per_device: must be between 1 and reorder_max_held (10)",
        ),
    ],
)
def test_reorder_config_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(ProcessorConfig, toml)
    assert message in str(err.value)


# -- the stage alone -------------------------------------------------------------


@given(st.integers(2, 60), st.integers(0, 2**32))
@settings(max_examples=100, deadline=None)
def test_stage_releases_each_seq_once_in_order(n: int, salt: int) -> None:
    """A local shuffle with redeliveries comes out of the stage as 1..n, once each."""
    from cloud_processor.rules.reorder import ReorderStage

    stage = ReorderStage(wait_ms=60_000, max_held=10_000, max_held_per_device=64)
    stream = [reading(seq, 5.0) for seq in range(1, n + 1)]
    rng = random.Random(salt)
    keys = [i + rng.uniform(0, 3) for i in range(n - 1)]
    rest = sorted(zip(keys, stream[1:], strict=True), key=lambda p: p[0])
    shuffled = stream[:1] + [r for _, r in rest] + rng.sample(stream, k=min(3, n))
    out = [judged.seq for r in shuffled for judged in stage.push(r, now_ms=T0)]
    assert out == list(range(1, n + 1))
    assert stage.held_count == 0 and stage.next_release_ms() is None
