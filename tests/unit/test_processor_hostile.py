"""Hostile records against the processor, with fakes (no services): one record
never stops the stream, device state stays bounded, a reading from years ago
costs no more than a fresh one."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.structs import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_processor.aggregates import MAX_SLICES_PER_QUERY, WINDOW_MS, DirtyWindows
from cloud_processor.app import Processor
from cloud_processor.config import AggregateSettings, KafkaSettings, ProcessorConfig, RulesConfig
from cloud_processor.rules import FleetRules
from cloud_processor.rules.settings import AlertSettings
from cloud_processor.storage import Storage
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from stagekit.config import ConfigError, loads
from stagekit.search.api import Request
from stagekit.search.indices import IndexNames
from telemetry_contract import (
    AlertStatus,
    ChangeKind,
    DeadLetter,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    Gap,
    GapReason,
    Quality,
    Reading,
    decode,
    encode,
)
from telemetry_contract.deadletter import DEADLETTER_LIMIT

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"
GOLDEN = sorted(p.read_bytes() for p in (FIXTURES / "valid").glob("*.json")) + sorted(
    p.read_bytes() for p in (FIXTURES / "invalid").iterdir() if p.is_file()
)
NOW = 1_767_225_600_000  # 2026-01-01, processing time of these tests
YEAR_MS = 365 * 86_400_000
TP = TopicPartition("h.telemetry", 0)


class _Record:
    """A consumed record, with the key and headers a foreign producer may set (unread)."""

    def __init__(
        self, value: bytes | None, offset: int, key: bytes | None = None, headers: Any = ()
    ) -> None:
        self.value, self.offset, self.key, self.headers = value, offset, key, headers


def reading(device: str, seq: int, temp: float = 5.0, *, ts: int | None = None) -> Reading:
    return Reading(
        device_id=device,
        sensor_id="host",
        site="s1",
        seq=seq,
        ts=NOW - 60_000 + seq * 1000 if ts is None else ts,
        temp_c=temp,
    )


def processor(config: ProcessorConfig | None = None, store: Any = None) -> Processor:
    return Processor(
        config or ProcessorConfig(kafka=KafkaSettings(topic_prefix="h")),
        source=FakeSource(TP),
        producer=FakeProducer(),
        storage=store or FakeStore(),
        clock=lambda: NOW / 1000,
    )


def golden_reading() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "valid" / "reading_ok.json").read_bytes()))


def with_nan(key: str) -> bytes:
    """A golden reading plus ``key: NaN`` (JSON has no NaN: written by hand)."""
    body = json.dumps(golden_reading())[:-1]
    return f"{body}, {json.dumps(key)}: NaN}}".encode()


HOSTILE: dict[str, bytes] = {
    "deep_nesting": b"[" * 1000 + b"]" * 1000,
    "deep_object": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "year_10000": json.dumps({**golden_reading(), "ts": 253_402_300_800_000}).encode(),
    "nan_under_dotted_key": with_nan("a.b"),
    "nan_under_bracket_key": with_nan("a[0]"),
    "nan_under_surrogate_key": with_nan("\ud800"),
    "record_900k": b'{"type":"reading","pad":"' + b"x" * 900_000 + b'"}',
    "random_bytes": bytes(range(256)) * 4,
    "huge_number": json.dumps({**golden_reading(), "seq": 10**400}).encode(),
    "not_utf8_id": json.dumps(golden_reading()).encode().replace(b"s1-d01", b"s1-\xff\xfe"),
}


def letters(p: Processor) -> list[tuple[DeadLetter, bytes]]:
    out = []
    for topic, value, _ in p.producer.sent:  # type: ignore[attr-defined]
        if topic == p.topics.deadletter:
            letter = decode(value)
            assert isinstance(letter, DeadLetter)
            out.append((letter, value))
    return out


async def run_once(p: Processor, batch: dict[Any, list[_Record]]) -> None:
    p.source.batches.append(batch)  # type: ignore[attr-defined]
    await p.start()
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await asyncio.wait_for(p.source.drained.wait(), 10)  # type: ignore[attr-defined]
    stop.set()
    await asyncio.wait_for(task, 10)
    await p.close()


# -- one record never stops the stream --------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_hostile_record_is_dead_lettered_and_committed_past(name: str) -> None:
    """Valid readings of other devices around it are stored once; the loop goes on."""
    p = processor()
    values = [encode(reading("ok-1", 1)), HOSTILE[name], encode(reading("ok-2", 1))]
    await run_once(p, {TP: [_Record(v, 100 + i) for i, v in enumerate(values)]})
    ids = [i.id for i in p.storage.written if i.id.startswith("ok-")]  # type: ignore[attr-defined]
    assert ids == ["ok-1:1", "ok-2:1"]
    ((letter, value),) = letters(p)
    assert len(value) <= DEADLETTER_LIMIT
    assert letter.source_topic == TP.topic
    assert p.source.commits[-1] == {TP: 103}  # type: ignore[attr-defined]


async def test_a_record_the_rules_choke_on_is_skipped_not_stored_and_committed_past(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any exception in the rules (a bug) skips that record only: dead letter, commit."""
    p = processor()
    judge = p.rules.on_reading

    def choke(r: Reading, *, now_ms: int) -> Any:
        if r.device_id == "boom":
            raise ZeroDivisionError("a rule's bug")
        return judge(r, now_ms=now_ms)

    monkeypatch.setattr(p.rules, "on_reading", choke)
    values = [encode(reading("ok-1", 1)), encode(reading("boom", 1)), encode(reading("ok-1", 2))]
    await run_once(p, {TP: [_Record(v, i) for i, v in enumerate(values)]})
    assert [i.id for i in p.storage.written] == ["ok-1:1", "ok-1:2"]  # type: ignore[attr-defined]
    ((letter, _),) = letters(p)
    assert letter.reason == "invalid_value"
    assert letter.detail.startswith("ZeroDivisionError: a rule's bug")
    assert json.loads(letter.payload)["device_id"] == "boom"  # kept to replay it once fixed
    assert p.source.commits[-1] == {TP: 3}  # type: ignore[attr-defined]
    sample = p.metrics.registry.get_sample_value
    assert sample("thermowatch_processor_record_errors_total", {"error": "ZeroDivisionError"}) == 1


def test_a_900k_record_is_cut_before_it_becomes_a_letter() -> None:
    """A record far beyond what a Kafka request takes still gives a small dead letter."""
    p = processor()
    out = p.batches.prepare({TP: [_Record(HOSTILE["record_900k"], 8)]}, NOW)
    (letter,) = out.dead
    assert len(encode(letter)) <= DEADLETTER_LIMIT
    assert f"record of {len(HOSTILE['record_900k'])} bytes" in letter.detail
    assert letter.reason == "too_large"


def test_an_unexpected_error_quoting_raw_device_text_still_makes_a_dead_letter() -> None:
    """Its text (a raw lone surrogate, a line break, an RTL mark) is escaped in the letter."""
    from cloud_processor.quarantine import dead_letter_for

    exc = ValueError("\ud800\n\u202e" + "k" * 5000)
    letter, value = dead_letter_for(b"{}", exc, topic="t", now_ms=NOW)
    assert decode(value) == letter and len(value) <= DEADLETTER_LIMIT
    assert letter.detail.startswith("ValueError: \\ud800\\n\\u202ekkk")
    assert letter.detail.isprintable()


def test_skipped_records_log_one_short_sanitised_line_within_a_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attacker field names reach the log escaped, quoted and cut; at most 10 lines at once."""
    p = processor()
    forged = "x\nevent=forged \u202e" + "y" * 5000
    records = [_Record(with_nan(forged), i) for i in range(200)]
    with caplog.at_level(logging.WARNING, logger="cloud_processor.batches"):
        out = p.batches.prepare({TP: records}, NOW)
    assert len(out.dead) == 200
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    for line in lines:
        assert line.startswith("event=record_skipped ")
        assert len(line) < 400
        assert "\n" not in line and "\u202e" not in line and "yyyyy" * 40 not in line
        assert " event=forged" not in line.replace('"x\\\\nevent=forged', "")


# -- property: anything in, stored or dead-lettered, committed past ------------------


def _mutate(data: st.DataObject) -> bytes:
    raw = bytearray(data.draw(st.sampled_from(GOLDEN)))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[at]
        else:
            del raw[at:]
    return bytes(raw)


_TRICKY_IDS = st.sampled_from(
    ["s1-d01", "a/b", "a+b", "#", "a\x00b", "\u202eevil", "\ud800", "x" * 10_000, "d\n", "é"]
)
_ODD_VALUES = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 10**400, -(10**30), 2**63, 1e308, "", None, [], {}]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=50),
    _TRICKY_IDS,
    # far past and future timestamps, and the edges of what a date can hold
    st.sampled_from([0, -1, NOW - 30 * YEAR_MS, NOW + 30 * YEAR_MS, 253_402_300_800_000]),
)


def _json_with(data: st.DataObject) -> bytes:
    doc: dict[str, Any] = golden_reading()
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.one_of(st.sampled_from(sorted(doc)), _TRICKY_IDS, st.text(max_size=12)))
        doc[key] = data.draw(_ODD_VALUES)
    try:
        text = json.dumps(doc)  # NaN and Infinity as JS literals, as a foreign producer may
    except (ValueError, OverflowError):
        return b"{}"
    return text.encode("utf-8", "surrogatepass")


def _nested(data: st.DataObject) -> bytes:
    depth = data.draw(st.integers(1, 3000))
    opener, closer = data.draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opener * depth + b"0" + closer * depth


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_record_is_stored_or_dead_lettered_and_committed(data: st.DataObject) -> None:
    """Random bytes, mutated golden fixtures, deep nesting, NaN, huge numbers,
    unicode tricks in ids, far timestamps, any key and headers: ``prepare``
    never raises, the record is stored or a dead letter of bounded size, and
    the valid readings around it are stored and the offsets move past all."""
    kind = data.draw(st.sampled_from(["bytes", "mutated", "json", "nested", "none"]))
    value: bytes | None
    if kind == "bytes":
        value = data.draw(st.binary(max_size=2048))
    elif kind == "mutated":
        value = _mutate(data)
    elif kind == "json":
        value = _json_with(data)
    elif kind == "nested":
        value = _nested(data)
    else:
        value = None  # a tombstone
    key = data.draw(st.one_of(st.none(), st.binary(max_size=64)))
    headers = data.draw(st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3))
    p = processor()
    records = [
        _Record(encode(reading("ok-1", 1)), 0),
        _Record(value, 1, key, headers),
        _Record(encode(reading("ok-1", 2)), 2),
    ]
    now = NOW + data.draw(st.integers(0, 3)) * 86_400_000
    out = p.batches.prepare({TP: records}, now)
    ids = [item.id for item in out.readings]
    assert ids[0] == "ok-1:1" and ids[-1] == "ok-1:2"
    assert len(out.readings) <= 3 and len(out.dead) <= 1
    assert len(out.readings) == 3 or out.dead or kind != "none"
    for letter in out.dead:
        assert len(encode(letter)) <= DEADLETTER_LIMIT
    assert out.offsets == {TP: 3}
    p.batches.prepare({}, now + 1000)  # the next tick is fine too


# -- bounded device state ------------------------------------------------------------


def fleet(**kw: Any) -> FleetRules:
    return FleetRules(RulesConfig(**kw), AlertSettings())


def _holds(rules: FleetRules, device_id: str) -> list[str]:
    """Where a device id is still found in the rules' state (dict keys, set members)."""
    found = []

    def seen(container: Any) -> bool:
        if isinstance(container, dict):
            return any(
                k == device_id or (isinstance(k, tuple) and device_id in k) or seen(v)
                for k, v in container.items()
            )
        if isinstance(container, (set, frozenset)):
            return device_id in container
        return False

    for owner in (rules, rules._reorder, rules.book, *rules._rules):
        for name, value in vars(owner).items() if hasattr(owner, "__dict__") else ():
            if seen(value):
                found.append(f"{type(owner).__name__}.{name}")
        for name in getattr(type(owner), "__slots__", ()):
            if seen(getattr(owner, name, None)):
                found.append(f"{type(owner).__name__}.{name}")
    return found


def test_an_idle_device_leaves_nothing_in_any_rule() -> None:
    """Conformance over every rule of the registry: state of an evicted device is gone."""
    rules = fleet(threshold_high_c=8.0, min_duration_s=0, rate_max_c_per_min=50.0)
    gap = Gap(
        device_id="idle-1", site="s1", ts=NOW, first_seq=1, last_seq=2, reason=GapReason.OUTBOX_FULL
    )
    rules.on_gap(gap, now_ms=NOW)
    for i in range(3, 9):
        r = reading("idle-1", i, 4.0, ts=NOW + i * 1000)
        if i % 2:
            r = msgspec.structs.replace(r, quality=Quality.CRC_ERROR, temp_c=None)
        rules.on_reading(r, now_ms=NOW)
    edge = json.loads((FIXTURES / "valid" / "edge_alert.json").read_bytes())
    for state in ("raised", "cleared"):
        raw = json.dumps({**edge, "device_id": "idle-1", "state": state, "ts": NOW + 9000})
        msg = decode(raw.encode(), now_ms=NOW + 10_000)
        assert isinstance(msg, EdgeAlert)
        rules.on_edge_alert(msg, now_ms=NOW)
    for state in (DeviceState.OFFLINE, DeviceState.ONLINE):
        status = DeviceStatus(device_id="idle-1", site="s1", ts=NOW + 9500, state=state)
        rules.on_status(status, now_ms=NOW)
    for peer in ("p1", "p2", "p3", "p4"):
        rules.on_reading(reading(peer, 1, ts=NOW), now_ms=NOW)
    rules.tick(NOW)
    assert _holds(rules, "idle-1")
    assert rules.book.active_alerts() == []  # every alert it had is resolved
    idle = int(RulesConfig().device_idle_s * 1000)
    for peer in ("p1", "p2", "p3", "p4"):  # peers stay active
        rules.on_reading(reading(peer, 2, ts=NOW + idle), now_ms=NOW + idle)
    changes = rules.tick(NOW + idle + 60_000)
    # silent: its stale alert opens before it is compacted, and stays open
    assert [(c.kind, c.alert.device_id, c.alert.rule) for c in changes] == [
        (ChangeKind.OPENED, "idle-1", "stale_sensor")
    ]
    # no rule keeps anything of it: only its compact record and its open alert
    assert sorted(_holds(rules, "idle-1")) == ["FleetRules._parked", "FleetRules._records"]
    assert rules.book.open_count == 1
    assert rules.evicted == 1 and rules.device_count == 5  # compacted devices count


def test_an_open_alert_of_an_idle_device_stays_open_and_clears_when_it_is_heard_again() -> None:
    rules = fleet(threshold_high_c=8.0, min_duration_s=0)
    (opened,) = rules.on_reading(reading("d1", 1, 9.0, ts=NOW), now_ms=NOW)
    idle = int(RulesConfig().device_idle_s * 1000)
    changes = rules.tick(NOW + idle)
    assert [c.alert.rule for c in changes if c.kind is ChangeKind.RESOLVED] == []
    assert rules.evicted == 1 and rules.device_count == 1  # parked: its alert counts
    assert rules.book.open_count == 2  # threshold and stale, in its compact record
    (stale,) = [c for c in changes if c.kind is ChangeKind.OPENED]  # silent for a day
    # heard from again: the same alerts resolve as usual (no second alert opens)
    back = NOW + idle + 1000
    changes = rules.on_reading(reading("d1", 2, 5.0, ts=back), now_ms=back)
    assert [(c.kind, c.alert.alert_id) for c in changes] == [
        (ChangeKind.RESOLVED, stale.alert.alert_id),
        (ChangeKind.RESOLVED, opened.alert.alert_id),
    ]


def test_beyond_max_devices_the_least_recent_is_evicted_and_parked_alerts_resolved_loudly() -> None:
    rules = fleet(threshold_high_c=8.0, min_duration_s=0, max_devices=3)
    rules.on_reading(reading("hot", 1, 9.0, ts=NOW), now_ms=NOW)  # opens an alert
    for i, device in enumerate(["a", "b", "c", "d"]):
        rules.on_reading(reading(device, 1, ts=NOW), now_ms=NOW + 1 + i)
    changes = rules.tick(NOW + 10)
    assert rules.device_count == 3
    (resolved,) = changes
    assert resolved.kind is ChangeKind.RESOLVED and resolved.alert.device_id == "hot"
    assert resolved.alert.status is AlertStatus.RESOLVED
    assert "rules.max_devices (3)" in (resolved.alert.clear_reason or "")
    assert resolved.notify is False  # recorded and published, never a notification storm
    assert rules.book.active("hot", "threshold_high") is None
    assert rules.evicted_alerts == 1
    assert {"b", "c", "d"} == set(rules._heard)  # "a" was heard longest ago


def test_eviction_judges_held_readings_and_loses_or_repeats_no_stored_reading() -> None:
    """Devices churn through a tiny max_devices while readings are held for
    reordering: every reading is stored exactly once and nothing stays held."""
    config = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="h"),
        rules=RulesConfig(max_devices=2, threshold_high_c=8.0, min_duration_s=0),
    )
    p = processor(config)
    devices = ("a", "b", "c", "d", "e")
    expected = [f"{d}:{seq}" for d in devices for seq in (1, 2, 3, 4)]
    ids: list[str] = []
    changes = []
    offset = 0
    # seq 3 (a spike) overtakes seq 2 and is held; the tick evicts a, b, c
    # while they hold it; seq 2 and 4 come in the next batch
    for step, seqs in enumerate(((1, 3), (2, 4))):
        records = []
        for device in devices:
            for seq in seqs:
                records.append(
                    _Record(encode(reading(device, seq, 9.0 if seq == 3 else 5.0)), offset)
                )
                offset += 1
        out = p.batches.prepare({TP: records}, NOW + step)
        ids += [i.id for i in out.readings]
        changes += out.changes
        assert p.rules.device_count <= 2  # bounded after each tick
    assert p.rules.evicted >= 3
    assert sorted(ids) == sorted(expected)  # every reading stored once
    assert p.rules.held_count == 0 and p.commit_floor() == {}
    # the held spike of every device was judged, evicted or not
    spikes = [c for c in changes if c.kind is ChangeKind.OPENED and c.alert.value == 9.0]
    assert sorted(c.alert.device_id for c in spikes) == list(devices)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[rules]\nmax_devices = 0\n", "rules.max_devices"),
        ("[rules]\nmax_devices = 2000000\n", "rules.max_devices"),
        ("[rules]\ndevice_idle_s = 10\n", "rules.device_idle_s"),
        ("[rules]\nstate_spill_dir = '/no/such/dir'\n", "rules.state_spill_dir"),
        ("[rules]\nstate_spill_dir = 3\n", "rules.state_spill_dir"),
        ("[rules]\ndevice_idle_s = 200\nstale_after_s = 600\n", "rules.device_idle_s"),
        (
            "[rules]\ndevice_idle_s = 700\n[rules.groups.g]\nsites = ['s']\nstale_after_s = 900\n",
            "rules.device_idle_s",
        ),
        ("[aggregates]\nrecompute_window_s = 1\n", "aggregates.recompute_window_s"),
        ("[aggregates]\nrecompute_window_s = 'x'\n", "aggregates.recompute_window_s"),
    ],
)
def test_state_limits_are_checked_and_errors_name_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: "):
        loads(ProcessorConfig, toml)


def test_state_limit_defaults_fit_a_10k_fleet() -> None:
    cfg = ProcessorConfig()
    assert cfg.rules.max_devices >= 2 * 10_000
    assert cfg.rules.device_idle_s >= cfg.rules.memory_s()
    assert cfg.aggregates.recompute_window_s == 7 * 86_400


# -- old and future readings cost what fresh ones cost -----------------------------------


def test_a_reading_years_late_is_stored_counted_and_marks_no_window() -> None:
    p = processor()
    old = reading("d1", 1, ts=NOW - 3 * YEAR_MS)
    out = p.batches.prepare({TP: [_Record(encode(old), 0)]}, NOW)
    assert [i.id for i in out.readings] == ["d1:1"]
    assert out.windowed == []
    sample = p.metrics.registry.get_sample_value
    assert sample("thermowatch_processor_readings_not_aggregated_total", {"side": "past"}) == 1


def test_the_recompute_window_is_the_configured_one() -> None:
    p = processor(
        ProcessorConfig(
            kafka=KafkaSettings(topic_prefix="h"),
            aggregates=AggregateSettings(recompute_window_s=3600),
        )
    )
    inside, outside = reading("d1", 1, ts=NOW - 3_000_000), reading("d1", 2, ts=NOW - 3_700_000)
    out = p.batches.prepare({TP: [_Record(encode(inside), 0), _Record(encode(outside), 1)]}, NOW)
    assert [(tp, r.seq) for tp, r in out.windowed] == [(TP, 1)]


class RecordingBackend:
    """A search server that records every request and knows no readings."""

    name = "fake"

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def perform(self, request: Request) -> Any:
        self.requests.append(request)
        return {"aggregations": {"w": {"buckets": []}}}

    async def close(self) -> None:
        pass


def _ranges(backend: RecordingBackend) -> list[tuple[list[str], int, int]]:
    out = []
    for req in backend.requests:
        if not req.path.endswith("/_search"):
            continue
        assert isinstance(req.body, dict)
        for clause in req.body["query"]["bool"]["should"]:
            terms, rng = clause["bool"]["filter"]
            r = rng["range"]["@timestamp"]
            out.append((terms["terms"]["device_id"], r["gte"], r["lt"]))
    return out


async def test_a_late_reading_recomputes_its_own_minute_not_other_devices_history() -> None:
    """The flush asks for the late minute of the late device only; the fresh
    windows of 100 other devices cover their own minutes, not the years between."""
    backend = RecordingBackend()
    storage = Storage(backend, IndexNames("h-"))  # type: ignore[arg-type]
    dirty = DirtyWindows()
    for i in range(100):
        dirty.add(f"d{i:03}", "s1", NOW - 30_000)
        dirty.add(f"d{i:03}", "s1", NOW - 90_000)
    late_ts = NOW - 6 * 86_400_000  # within recompute_window_s (7 days): aggregated
    dirty.add("late", "s1", late_ts)
    await storage.compute_windows(dirty)
    ranges = _ranges(backend)
    late_start = late_ts - late_ts % WINDOW_MS
    assert (["late"], late_start, late_start + WINDOW_MS) in ranges
    for devices, start, end in ranges:
        if devices != ["late"]:
            assert start >= NOW - 2 * WINDOW_MS and end <= NOW + WINDOW_MS, (start, end)
        assert end - start <= 3 * WINDOW_MS  # nothing spans the days in between
    assert sum(len(d) * (e - s) // WINDOW_MS for d, s, e in ranges) == 100 * 2 + 1


async def test_scattered_late_minutes_are_asked_in_bounded_requests() -> None:
    """A device spreading readings over a week: requests grow with the dirty
    windows (at most MAX_SLICES_PER_QUERY ranges each), not with the span."""
    backend = RecordingBackend()
    storage = Storage(backend, IndexNames("h-"))  # type: ignore[arg-type]
    dirty = DirtyWindows()
    for k in range(500):
        dirty.add("spread", "s1", NOW - k * 20 * WINDOW_MS)
    await storage.compute_windows(dirty)
    searches = [r for r in backend.requests if r.path.endswith("/_search")]
    assert len(searches) == -(-500 // MAX_SLICES_PER_QUERY)
    assert sum(e - s for _, s, e in _ranges(backend)) == 500 * WINDOW_MS


class RejectingBackend(RecordingBackend):
    """Rejects every bulk item, quoting the document in its reason as servers do."""

    async def perform(self, request: Request) -> Any:
        self.requests.append(request)
        n = request.body.count(b"\n") // 2 if isinstance(request.body, bytes) else 0
        reason = "failed to parse [x\nevent=forged \u202e] value " + "y" * 5000
        item = {"create": {"status": 400, "error": {"type": "mapper", "reason": reason}}}
        return {"errors": True, "items": [item] * n}


async def test_documents_the_server_rejects_are_logged_escaped_cut_and_within_a_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cloud_processor.documents import Action, BulkItem

    storage = Storage(RejectingBackend(), IndexNames("h-"))  # type: ignore[arg-type]
    items = [BulkItem(Action.CREATE, "i", str(n), {}) for n in range(50)]
    with caplog.at_level(logging.ERROR, logger="cloud_processor.storage"):
        totals = await storage.write(items)
    assert totals.rejected == 50
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    for line in lines:
        assert len(line) < 400 and "\n" not in line and "\u202e" not in line


def test_over_max_devices_exactly_one_device_is_given_up_per_device_too_many() -> None:
    """Devices of one batch share a last-heard time: the limit gives up as
    many as it is exceeded by, not the whole batch (no thrash)."""
    rules = fleet(threshold_high_c=8.0, min_duration_s=0, max_devices=3)
    for device in ("a", "b", "c"):
        rules.on_reading(reading(device, 1, 9.0, ts=NOW), now_ms=NOW)
    rules.on_reading(reading("d", 1, 5.0, ts=NOW), now_ms=NOW + 1)
    changes = rules.tick(NOW + 2)
    assert [(c.kind, c.alert.device_id) for c in changes] == [(ChangeKind.RESOLVED, "a")]
    assert rules.evicted == 1 and list(rules._heard) == ["b", "c", "d"]
    assert rules.book.active("b", "threshold_high") is not None
