"""Bounded per-device rule state: idle devices compacted and rebuilt on demand,
and a tick that costs the devices that are due, not the fleet (pure, no services)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.config import AlertSettings, KafkaSettings, ProcessorConfig, RulesConfig
from cloud_processor.rules import FleetRules
from cloud_processor.rules.stale import StaleSensor
from cloud_processor.spill import SpillStore
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    GapReason,
    Quality,
    Reading,
    Severity,
)

T0 = 1_767_225_600_000
S = 1000
#: Every window at its shortest, so that compaction (after 60 s idle) happens often.
SHORT = {
    "threshold_high_c": 8.0,
    "critical_high_c": 12.0,
    "threshold_low_c": -20.0,
    "min_duration_s": 20.0,
    "rate_max_c_per_min": 6.0,
    "rate_window_s": 60.0,
    "stale_after_s": 60.0,
    "outlier_window_s": 60.0,
    "outlier_min_peers": 3,
    "fault_storm_count": 2,
    "fault_storm_window_s": 60.0,
}
FLAPPY = AlertSettings(flap_max_opens=2, flap_window_s=600, flap_hold_s=90)


def evicting(records: SpillStore | None = None) -> FleetRules:
    config = RulesConfig(**SHORT, device_idle_s=60)  # type: ignore[arg-type]
    return FleetRules(config, FLAPPY, records=records)


def keeping() -> FleetRules:
    """The same rules, never compacting a device (a year idle)."""
    return FleetRules(RulesConfig(**SHORT, device_idle_s=365 * 86_400), FLAPPY)  # type: ignore[arg-type]


def seen(changes: list[AlertChange]) -> list[tuple[Any, ...]]:
    """What a change says, to compare two processors."""
    return [
        (
            c.kind,
            c.notify,
            c.alert.alert_id,
            c.alert.version,
            c.alert.severity,
            c.alert.updated_at,
            c.alert.message,
            c.alert.clear_reason,
            c.alert.flapping,
            c.alert.late,
        )
        for c in changes
    ]


DEVICES = ("a", "b", "c", "d")
#: One step of a stream: (seconds to wait, device index, what it sends, a value).
step = st.tuples(
    st.sampled_from([0, 1, 5, 20, 45, 70, 130, 400]),
    st.integers(0, len(DEVICES) - 1),
    st.sampled_from(
        ["reading", "reading", "reading", "skip", "dup", "bad", "offline", "online", "gap", "edge"]
    ),
    st.sampled_from([4.0, 4.5, 9.0, 13.0, -25.0, 30.0]),
)


def play(
    rules: FleetRules,
    steps: list[tuple[int, int, str, float]],
    between: Callable[[FleetRules, int], None] | None = None,
    at: int = 0,
) -> list[list[tuple[Any, ...]]]:
    """Feed a stream (event time = processing time minus a little), tick after
    every step; ``between(rules, now)`` is called before step ``at``."""
    now = T0
    seqs = dict.fromkeys(DEVICES, 0)
    out = []
    for i, (wait_s, index, kind, value) in enumerate(steps):
        if between is not None and i == at:
            between(rules, now)
        now += wait_s * S
        device = DEVICES[index]
        ts = now - 300
        changes: list[AlertChange] = []
        if kind in ("reading", "skip", "dup", "bad"):
            if kind == "skip":
                seqs[device] += 1  # a seq lost on the way: the next one waits, then goes
            if kind != "dup" or seqs[device] == 0:
                seqs[device] += 1
            reading = Reading(
                device_id=device,
                sensor_id="host",
                site="s1",
                seq=seqs[device],
                ts=ts,
                temp_c=None if kind == "bad" else value,
                quality=Quality.CRC_ERROR if kind == "bad" else Quality.OK,
            )
            changes = rules.on_reading(reading, now_ms=now)
        elif kind in ("offline", "online"):
            state = DeviceState.OFFLINE if kind == "offline" else DeviceState.ONLINE
            status = DeviceStatus(device_id=device, site="s1", ts=ts, state=state, reason="lost")
            changes = rules.on_status(status, now_ms=now)
        elif kind == "gap":
            first = seqs[device] + 1
            seqs[device] += 2
            gap = Gap(
                device_id=device,
                site="s1",
                ts=ts,
                first_seq=first,
                last_seq=first + 1,
                reason=GapReason.OUTBOX_FULL,
            )
            changes = rules.on_gap(gap, now_ms=now)
        else:
            edge = EdgeAlert(
                device_id=device,
                site="s1",
                alert_id=f"{device}.anomaly.{ts}",
                ts=ts,
                kind=EdgeAlertKind.ANOMALY,
                severity=Severity.WARNING,
                message="score 0.99",
            )
            changes = rules.on_edge_alert(edge, now_ms=now)
        out.append(seen(changes))
        out.append(seen(rules.tick(now + 250)))  # after the reorder wait
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_a_compacted_device_is_judged_as_if_it_had_never_been_compacted(
    steps: list[tuple[int, int, str, float]],
) -> None:
    """Random streams of readings (in order, lost, duplicated, faulty), statuses,
    gaps and edge alerts with idle stretches: a processor that compacts idle
    devices after 60 s emits exactly the changes of one that never does."""
    compacting = evicting()
    assert play(compacting, steps) == play(keeping(), steps)


def test_the_property_stream_does_compact_and_rebuild() -> None:
    """The streams above reach compaction: a device idle for 70 s is compacted
    and rebuilt when it reports again."""
    rules = evicting()
    steps = [(0, 0, "reading", 9.0), (70, 1, "reading", 4.0), (5, 0, "reading", 9.0)]
    play(rules, steps[:2])
    assert "a" in rules._parked and rules.evicted == 1
    play(rules, steps[2:])
    assert "a" not in rules._parked


def test_a_silent_device_goes_stale_once_and_on_time_and_is_compacted_after() -> None:
    rules = evicting()
    first = Reading(device_id="a", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=4.0)
    rules.on_reading(first, now_ms=T0)
    assert rules.tick(T0 + 59_999) == []
    opened = rules.tick(T0 + 60_000)  # the first tick at its deadline
    assert [(c.kind, c.alert.rule, c.alert.opened_at) for c in opened] == [
        (ChangeKind.OPENED, "stale_sensor", T0 + 60_000)
    ]
    assert "a" in rules._parked  # compacted at the same tick, after its verdict
    for minutes in range(2, 30):
        assert rules.tick(T0 + minutes * 60_000) == []  # once
    assert rules.book.open_count == 1  # still open (in its compact record)
    back = Reading(device_id="a", sensor_id="host", site="s1", seq=2, ts=T0 + 1_800_000, temp_c=4.0)
    changes = rules.on_reading(back, now_ms=T0 + 1_800_000)
    assert [(c.kind, c.alert.alert_id) for c in changes] == [
        (ChangeKind.RESOLVED, opened[0].alert.alert_id)
    ]
    # rebuilt: it goes stale again on time
    assert rules.tick(T0 + 1_859_999) == []
    assert [c.kind for c in rules.tick(T0 + 1_860_000)] == [ChangeKind.OPENED]


def test_an_offline_device_is_compacted_with_its_alert_and_no_stale_alert() -> None:
    rules = evicting()
    reading = Reading(device_id="a", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=4.0)
    rules.on_reading(reading, now_ms=T0)
    will = DeviceStatus(device_id="a", site="s1", ts=T0 + 1, state=DeviceState.OFFLINE)
    assert [c.alert.rule for c in rules.on_status(will, now_ms=T0 + 1)] == ["device_offline"]
    assert rules.tick(T0 + 3_600_000) == []  # offline: no stale alert, compacted
    assert "a" in rules._parked
    online = DeviceStatus(device_id="a", site="s1", ts=T0 + 3_600_000, state=DeviceState.ONLINE)
    changes = rules.on_status(online, now_ms=T0 + 3_600_000)
    assert [(c.kind, c.alert.rule) for c in changes] == [(ChangeKind.RESOLVED, "device_offline")]
    # online again: stale_after_s to send a reading
    assert [c.alert.rule for c in rules.tick(T0 + 3_660_000)] == ["stale_sensor"]


def stale_rule(rules: FleetRules) -> StaleSensor:
    (rule,) = [r for r in rules._rules if isinstance(r, StaleSensor)]
    return rule


def test_tick_work_does_not_grow_with_idle_devices() -> None:
    """The same 20 active devices, with 0 or 2,000 idle (compacted) devices
    besides: each tick looks at the same number of devices (counted, not timed)."""
    work = []
    for idle in (0, 2000):
        rules = evicting()
        for i in range(idle):
            r = Reading(
                device_id=f"idle-{i}", sensor_id="host", site="s2", seq=1, ts=T0, temp_c=4.0
            )
            rules.on_reading(r, now_ms=T0)
        rules.tick(T0)
        rules.tick(T0 + 120_000)  # the idle ones go stale, then are compacted
        assert len(rules._parked) == idle
        stale = stale_rule(rules)
        before = stale.examined
        for k in range(1, 31):  # 30 ticks, 10 s apart; the 20 report every 10 s
            now = T0 + 120_000 + k * 10_000
            for d in range(20):
                r = Reading(
                    device_id=f"live-{d}", sensor_id="host", site="s1", seq=k, ts=now, temp_c=4.0
                )
                rules.on_reading(r, now_ms=now)
            rules.tick(now)
        work.append(stale.examined - before)
    assert work[0] == work[1]
    assert work[1] <= 30 * 20 // 6 + 20  # about one look per device and stale_after_s


def test_a_compacted_device_costs_its_record_only() -> None:
    """What is left of an idle device: one compact record with its open stale
    alert (a few hundred bytes, here with six rate-window points)."""
    rules = evicting()
    for k in range(6):
        r = Reading(
            device_id="a", sensor_id="host", site="s1", seq=k + 1, ts=T0 + k * S, temp_c=4.0
        )
        rules.on_reading(r, now_ms=T0 + k * S)
    rules.tick(T0 + 120_000)
    assert len(rules._records["a"]) < 400
    assert "a" not in rules._devices and rules.site_size("s1") == 1
    assert rules.book.active_alerts() == [] and rules.book.open_count == 1


@settings(max_examples=25, deadline=None)
@given(st.lists(step, min_size=1, max_size=30))
def test_records_spilled_to_sqlite_judge_the_same(steps: list[tuple[int, int, str, float]]) -> None:
    """The same property with the compact records in an SQLite file."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SpillStore(tmp)
        try:
            assert play(evicting(store), steps) == play(keeping(), steps)
        finally:
            store.close()
        assert list(Path(tmp).iterdir()) == []  # deleted at close


def test_spilled_records_leave_memory_and_the_file_goes_with_the_processor(
    tmp_path: Path,
) -> None:
    from cloud_processor.app import Processor

    config = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="t"),
        rules=RulesConfig(device_idle_s=300, state_spill_dir=str(tmp_path)),
    )
    p = Processor(config, source=FakeSource(), producer=FakeProducer(), storage=FakeStore())
    assert list(tmp_path.iterdir()) == []  # nothing opened before it is needed
    r = Reading(device_id="a", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=4.0)
    p.rules.on_reading(r, now_ms=T0)
    p.rules.tick(T0 + 400_000)
    assert "a" in p.rules._parked and p.rules._records is p._spill
    assert len(p._spill) == 1 and len(list(tmp_path.iterdir())) == 1
    back = Reading(device_id="a", sensor_id="host", site="s1", seq=2, ts=T0 + 401_000, temp_c=4.0)
    changes = p.rules.on_reading(back, now_ms=T0 + 401_000)
    assert [(c.kind, c.alert.rule) for c in changes] == [(ChangeKind.RESOLVED, "stale_sensor")]
    assert len(p._spill) == 0
    import asyncio

    asyncio.run(p.close())
    assert list(tmp_path.iterdir()) == []


def test_when_most_of_the_fleet_is_compacted_the_dict_tables_are_given_back() -> None:
    """Python dicts keep the table of their largest size: after 2,000 of 2,010
    devices are compacted, the per-device dicts are copied to their new size."""
    rules = evicting()
    for i in range(2010):
        r = Reading(device_id=f"d{i}", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=4.0)
        rules.on_reading(r, now_ms=T0 if i < 2000 else T0 + 100_000)
    full = sys.getsizeof(rules._devices)
    rules.tick(T0 + 120_000)
    assert len(rules._devices) == 10 and len(rules._parked) == 2000
    assert sys.getsizeof(rules._devices) * 20 < full
    assert sys.getsizeof(stale_rule(rules)._armed) * 20 < full


def test_a_rebalance_while_a_device_is_compacted_keeps_one_alert_and_its_pending_clear() -> None:
    """The alerts index is read again after a rebalance (``restore``) while a
    device's alerts sit in its compact record, one of them flapping with a
    clear pending: the device is rebuilt, the record's version wins a tie
    (it knows the pending clear), and it goes on as if nothing had happened."""
    steps = [
        (0, 0, "reading", 30.0),
        (30, 0, "reading", 30.0),  # threshold_high opens (critical)
        (5, 0, "reading", 4.0),  # resolves
        (5, 0, "reading", 30.0),
        (30, 0, "reading", 30.0),  # opens again: flapping from now on
        (5, 0, "reading", 4.0),  # clear pending for flap_hold_s (90 s)
        (70, 1, "reading", 4.0),  # "a" is silent: stale, then compacted
        (25, 0, "reading", 4.0),  # back 95 s after the clear began: resolves now
        (5, 0, "reading", 4.0),
    ]
    restored = []

    def rebalance(rules: FleetRules, now: int) -> None:
        if "a" in rules._parked:  # what the index holds for "a": its open alerts
            alerts = [
                Alert(*v[:4], Severity(v[4]), AlertStatus(v[5]), *v[6:])
                for v, _, _ in msgspec.msgpack.decode(rules._records["a"])[-1][3]
            ]
        else:
            alerts = [a for a in rules.book.active_alerts() if a.device_id == "a"]
        restored.append({a.rule for a in alerts})
        rules.restore(alerts, now_ms=now)
        assert "a" not in rules._parked

    compacting = play(evicting(), steps, rebalance, at=7)
    assert compacting == play(keeping(), steps, rebalance, at=7)
    assert restored[0] == restored[1] and {"threshold_high", "stale_sensor"} <= restored[0]
    resolved = [c for changes in compacting for c in changes if c[0] is ChangeKind.RESOLVED]
    assert any(c[2].startswith("a.threshold_high.") and c[8] for c in resolved)  # was flapping


def test_a_fleet_falling_silent_at_once_is_compacted_over_a_few_ticks() -> None:
    """At most 10,000 compactions per tick: no single long pause."""
    rules = FleetRules(RulesConfig(device_idle_s=60, stale_after_s=60), AlertSettings())
    for i in range(12_000):
        r = Reading(device_id=f"d{i}", sensor_id="host", site="s1", seq=1, ts=T0, temp_c=4.0)
        rules.on_reading(r, now_ms=T0)
    rules.tick(T0 + 60_000)  # every one goes stale, 10,000 are compacted
    assert len(rules._parked) == 10_000 and rules.book.open_count == 12_000
    rules.tick(T0 + 61_000)
    assert len(rules._parked) == 12_000 and rules.book.open_count == 12_000
