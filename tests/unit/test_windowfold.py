"""One-minute windows folded in memory come out as the query over the stored
readings computes them, across redeliveries, lost bulk answers, seq reuse,
late readings, handovers and crashes (pure, no services).

The model: two processors share one search server (a dict, first ``create``
wins) and a Kafka topic of two partitions. Hypothesis draws the records and
a schedule of steps -- a processor writes the next records of a partition
it owns, flushes (writes its windows, commits), hands a partition over
cleanly (flush first, as the processor's revoke does), crashes (its
uncommitted records are read again by the next owner), or time passes. At
the end every window document must equal the window recomputed from the
stored readings by an independent reference (32-bit floats through
:mod:`array`, not :mod:`struct`).
"""

from __future__ import annotations

import array
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloud_processor.aggregates import WINDOW_MS, DirtyWindows, WindowAggregate, window_start
from cloud_processor.app import Processor
from cloud_processor.batches import Prepared
from cloud_processor.chain import PendingWrite
from cloud_processor.config import (
    AggregateSettings,
    KafkaSettings,
    ProcessorConfig,
)
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.sink import Sink
from cloud_processor.storage import BulkTotals
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore, bare_sink
from cloud_processor.windowfold import SINCE_MARGIN_MS, LiveWindows
from stagekit.config import ConfigError, loads
from telemetry_contract import Quality, Reading, encode

T0 = 1_767_225_600_000
HOLD_MS = 120_000
TP = TopicPartition("h.telemetry", 0)


def reference(readings: Sequence[Reading]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """What the aggregation query computes from the stored readings."""
    by_window: dict[tuple[str, int], list[Reading]] = {}
    for r in readings:
        if r.temp_c is not None and r.quality is Quality.OK:
            by_window.setdefault((r.device_id, window_start(r.ts)), []).append(r)
    out = {}
    for key, rs in by_window.items():
        values = array.array("f", [r.temp_c for r in rs if r.temp_c is not None]).tolist()
        last = max(rs, key=lambda r: (r.ts, r.seq))
        out[key] = (
            len(rs),
            round(min(values), 4),
            round(max(values), 4),
            round(sum(values) / len(values), 4),
            last.temp_c,
            last.ts,
            round(sum(values), 4),
            last.seq,
        )
    return out


def visible(w: WindowAggregate) -> tuple[Any, ...]:
    """A window document as :func:`reference` gives it."""
    return (
        w.count,
        w.temp_min,
        w.temp_max,
        w.temp_mean,
        w.temp_last,
        w.last_ts,
        round(w.temp_sum, 4),
        w.last_seq,
    )


class Server:
    """A search server: readings (first create wins), window documents."""

    def __init__(self) -> None:
        self.readings: dict[str, Reading] = {}
        self.windows: dict[tuple[str, int], WindowAggregate] = {}
        self.lose_next_answer = False
        self.queries = 0
        self.loaded = 0  # window documents read back (multi-get)
        self.old_release = False  # documents without temp_sum: unknown to a new owner

    def documents(self) -> dict[tuple[str, int], tuple[Any, ...]]:
        return {k: visible(w) for k, w in self.windows.items()}


class Store:
    """One processor's view of :class:`Server` (the :class:`~cloud_processor.ports.Store` used)."""

    def __init__(self, server: Server, pending: dict[str, Reading]) -> None:
        self.server = server
        self.pending = pending  # the readings of the items being written

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        totals = BulkTotals()
        lost = self.server.lose_next_answer
        self.server.lose_next_answer = False
        for item in items:
            if item.action is Action.CREATE:
                if item.id in self.server.readings or lost:
                    # An answer lost after the server stored it: the retry meets a 409.
                    self.server.readings.setdefault(item.id, self.pending[item.id])
                    totals.duplicates += 1
                    totals.duplicate_ids.add(item.id)
                else:
                    self.server.readings[item.id] = self.pending[item.id]
                    totals.stored += 1
            else:
                w = item.doc["_value"]
                self.server.windows[(w.device_id, w.start)] = w
                totals.stored += 1
        return totals

    async def load_windows(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], WindowAggregate | None]:
        self.server.loaded += len(keys)
        if self.server.old_release:
            return {k: None for k in keys if k not in self.server.windows}
        return {k: self.server.windows.get(k) for k in keys}

    async def compute_windows(self, dirty: DirtyWindows) -> list[WindowAggregate]:
        self.server.queries += 1
        ref = reference(list(self.server.readings.values()))
        out = []
        for key, site in dirty.windows.items():
            if key in ref:
                count, lo, hi, mean, last, last_ts, _, last_seq = ref[key]
                total = sum(
                    array.array(
                        "f",
                        [
                            r.temp_c
                            for r in self.server.readings.values()
                            if r.temp_c is not None
                            and r.quality is Quality.OK
                            and (r.device_id, window_start(r.ts)) == key
                        ],
                    ).tolist()
                )
                out.append(
                    WindowAggregate(
                        key[0], site, key[1], count, lo, hi, mean, last, last_ts, total, last_seq
                    )
                )
        return out

    def aggregate_items(
        self, windows: Sequence[WindowAggregate], locations: Any = None
    ) -> list[BulkItem]:
        return [
            BulkItem(
                Action.INDEX,
                "agg",
                f"{w.device_id}:{w.start}",
                {"_value": w},
            )
            for w in windows
        ]


@dataclass
class Member:
    """One processor: its fold, its sink, the partitions it reads and where."""

    server: Server
    now: list[int]
    live: LiveWindows[str] = field(init=False)
    sink: Sink = field(init=False)
    pending: dict[str, Reading] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)  # partition -> next offset

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        """A new process (after a crash): nothing in memory."""
        self.live = LiveWindows(hold_ms=HOLD_MS)
        self.sink = bare_sink(
            Store(self.server, self.pending),  # type: ignore[arg-type]
            live=self.live,
            now_ms=lambda: self.now[0],
        )
        self.position = {}


def reading(device: int, seq: int, minute: int, second: int, temp: float | None) -> Reading:
    return Reading(
        device_id=f"d{device}",
        sensor_id="probe",
        site="s1",
        seq=seq,
        ts=T0 + minute * WINDOW_MS + second * 1000,
        temp_c=temp,
        quality=Quality.OK if temp is not None else Quality.CRC_ERROR,
    )


readings_st = st.builds(
    reading,
    device=st.integers(0, 3),
    seq=st.integers(1, 12),  # few seqs: redeliveries and reused seqs are common
    minute=st.integers(0, 6),
    second=st.integers(0, 59),
    temp=st.one_of(st.none(), st.sampled_from([21.3, 4.0625, -18.7, 22.0, 5.1, 30.05])),
)
steps_st = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 1), st.integers(1, 6)),
        st.tuples(st.just("flush"), st.integers(0, 1)),
        st.tuples(st.just("handover"), st.integers(0, 1)),
        st.tuples(st.just("crash"), st.integers(0, 1)),
        st.tuples(st.just("lose"), st.just(0)),
        st.tuples(st.just("old"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 400)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(records=st.lists(readings_st, max_size=60), steps=steps_st)
@example(  # a reading for a window let go of: recomputed, not folded anew
    records=[reading(0, 1, 0, 5, 21.3), reading(0, 2, 0, 30, 22.0)],
    steps=[("write", 0, 1), ("flush", 0), ("wait", 400), ("flush", 0)],
)
def test_folded_windows_equal_the_query_over_the_stored_readings(
    records: list[Reading], steps: list[tuple[Any, ...]]
) -> None:
    asyncio.run(run_model(records, steps))


async def run_model(records: list[Reading], steps: list[tuple[Any, ...]]) -> None:
    server = Server()
    now = [T0]
    members = [Member(server, now), Member(server, now)]
    logs: dict[str, list[Reading]] = {"p0": [], "p1": []}
    for r in records:
        logs[f"p{int(r.device_id[1:]) % 2}"].append(r)
    owner = {"p0": 0, "p1": 1}
    committed = {"p0": 0, "p1": 0}

    async def write(m: Member, p: str, n: int) -> None:
        start = m.position.get(p, committed[p])
        batch = logs[p][start : start + n]
        if not batch:
            return
        if not m.live.checked(p):  # what BatchPreparer.prepare does at a partition's first records
            m.live.check(p, start, now[0])
        prepared = Prepared()
        for r in batch:
            m.pending[reading_id(r)] = r
            prepared.readings.append(
                BulkItem(Action.CREATE, "readings", reading_id(r), reading_doc(r))
            )
            prepared.windowed.append((p, r))
        await m.sink.write(PendingWrite(prepared))
        m.position[p] = start + len(batch)
        now[0] += 1000

    async def flush(m: Member) -> None:
        await m.sink.write_windows()
        done = {p: off for p, off in m.position.items() if owner[p] == members.index(m)}
        committed.update(done)
        m.live.committed(done)

    for step in steps:
        kind, arg = step[0], step[1]
        if kind == "write":
            p = f"p{arg}"
            await write(members[owner[p]], p, step[2])
        elif kind == "flush":
            await flush(members[arg])
        elif kind == "handover":  # clean: the old owner flushes and commits first
            p = f"p{arg}"
            old = members[owner[p]]
            await flush(old)
            old.live.revoked([p])
            old.position.pop(p, None)
            owner[p] = 1 - owner[p]
        elif kind == "crash":  # nothing flushed; another member takes its partitions
            m = members[arg]
            m.start()
            for p, o in owner.items():
                if o == arg:
                    owner[p] = 1 - arg
                    other = members[1 - arg]
                    other.live.revoked([p])  # rejoining the group revokes all first
                    other.position.pop(p, None)
        elif kind == "lose":
            server.lose_next_answer = True
        elif kind == "old":  # documents stored from now on read back as unknown
            server.old_release = not server.old_release
        else:
            now[0] += arg * 1000
    for p in ("p0", "p1"):  # read to the end and flush
        m = members[owner[p]]
        await write(m, p, len(logs[p]))
    for m in members:
        await flush(m)

    want = reference(list(server.readings.values()))
    assert {k: v for k, v in server.documents().items() if k in want} == want
    assert set(server.windows) <= set(want)


def test_a_steady_fleet_needs_no_query() -> None:
    """Readings in order, each stored once: every window comes from memory."""
    server = Server()
    now = [T0]
    m = Member(server, now)

    async def run() -> None:
        m.live.check("p0", 0, now[0])
        for minute in range(10):
            prepared = Prepared()
            for device in range(50):
                r = reading(device, minute + 1, minute, device % 60, 20.0 + device / 16)
                m.pending[reading_id(r)] = r
                prepared.readings.append(
                    BulkItem(Action.CREATE, "readings", reading_id(r), reading_doc(r))
                )
                prepared.windowed.append(("p0", r))
            await m.sink.write(PendingWrite(prepared))
            now[0] = T0 + (minute + 1) * WINDOW_MS
            await m.sink.write_windows()

    asyncio.run(run())
    assert server.queries == 0
    assert server.documents() == reference(list(server.readings.values()))
    assert len(m.live) <= 50 * (HOLD_MS // WINDOW_MS + 2)  # old windows let go


async def store(m: Member, p: str, readings: Sequence[Reading]) -> None:
    """``m`` writes ``readings`` of partition ``p`` (one step of its chain)."""
    prepared = Prepared()
    for r in readings:
        m.pending[reading_id(r)] = r
        prepared.readings.append(BulkItem(Action.CREATE, "readings", reading_id(r), reading_doc(r)))
        prepared.windowed.append((p, r))
    await m.sink.write(PendingWrite(prepared))


def takeover(*, replayed: int, old_release: bool = False) -> tuple[Server, Member]:
    """Processor ``a`` stores two readings of 20 devices in one minute, flushes
    and commits at offset 40, stores ``replayed`` more and dies; ``b`` reads on
    from offset 40 and gets a third reading of every device in that minute,
    older than the newest one stored."""
    server = Server()
    now = [T0]
    a, b = Member(server, now), Member(server, now)
    first = [
        reading(d, seq, 0, 10 * seq**2, 20.0 + seq + d / 16) for d in range(20) for seq in (1, 2)
    ]
    second = [reading(d, 3, 0, 30, 21.3 + d / 16) for d in range(20)]

    async def run() -> None:
        a.live.check("p0", 0, now[0])
        await store(a, "p0", first)
        await a.sink.write_windows()
        a.live.committed({"p0": 40})
        await store(a, "p0", second[:replayed])  # stored, never committed
        server.old_release = old_release
        now[0] += 30_000
        assert not b.live.check("p0", 40, now[0])  # someone else committed
        await store(b, "p0", second)  # read again from the commit
        await b.sink.write_windows()

    asyncio.run(run())
    assert server.documents() == reference(list(server.readings.values()))
    return server, b


def test_a_partition_taken_over_resumes_its_windows_from_their_documents() -> None:
    server, b = takeover(replayed=0)
    assert (server.queries, server.loaded) == (0, 20)  # one multi-get, no aggregation
    assert b.live.unseeded() == []
    assert {(w.count, w.last_seq) for w in server.windows.values()} == {(3, 2)}


def test_a_reading_the_dead_owner_stored_after_its_commit_sends_its_window_to_the_query() -> None:
    server, _ = takeover(replayed=3)
    assert server.queries == 1  # the 3 windows answered 409: ambiguous


def test_documents_of_an_earlier_release_are_recomputed_by_query() -> None:
    server, _ = takeover(replayed=0, old_release=True)
    assert server.queries == 1
    assert {w.count for w in server.windows.values()} == {3}


def test_a_partition_back_from_nobody_else_keeps_its_windows() -> None:
    live: LiveWindows[str] = LiveWindows(hold_ms=HOLD_MS)
    assert not live.check("p0", 500, T0)  # committed by someone else
    assert live.fold("p0", "d1", "s1", seq=1, ts=T0 + SINCE_MARGIN_MS - 1, temp_c=20.0)
    assert live.fold("p0", "d2", "s1", seq=1, ts=T0 + SINCE_MARGIN_MS, temp_c=20.0)
    assert live.unseeded() == [("d1", window_start(T0 + SINCE_MARGIN_MS - 1))]  # d2: after
    live.seed({})  # could not be read: to the query
    live.committed({"p0": 900})
    live.revoked(["p0"])
    assert not live.accepts("p0", T0 + SINCE_MARGIN_MS)  # not ours until checked again
    assert live.check("p0", 900, T0 + 1000)  # back, and nobody committed meanwhile
    assert live.accepts("p0", T0 + SINCE_MARGIN_MS)
    assert [w.device_id for w in live.take_changed()] == ["d2"]


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def a_processor(config: ProcessorConfig | None = None) -> Processor:
    return Processor(
        config or ProcessorConfig(kafka=KafkaSettings(topic_prefix="h")),
        source=FakeSource(TP),
        producer=FakeProducer(),
        storage=FakeStore(),
        clock=lambda: T0 / 1000,
    )


def test_the_first_records_after_an_assignment_decide_what_is_folded() -> None:
    r = reading(0, 1, 0, 5, 21.3)
    fresh = a_processor()  # a partition read from its first record: fold at once
    fresh.batches.prepare({TP: [_Record(encode(r), 0)]}, T0)
    assert fresh.live is not None and fresh.live.accepts(TP, T0)
    fresh.live.fold(TP, "d0", "s1", seq=1, ts=T0, temp_c=21.3)
    assert fresh.live.unseeded() == []
    taken = a_processor()  # someone committed up to 100: seed windows until the margin
    taken.batches.prepare({TP: [_Record(encode(r), 100)]}, T0)
    assert taken.live is not None and taken.live.checked(TP)
    for ts in (T0 + SINCE_MARGIN_MS - WINDOW_MS, T0 + SINCE_MARGIN_MS):
        taken.live.fold(TP, "d0", "s1", seq=1, ts=ts, temp_c=21.3)
    assert taken.live.unseeded() == [("d0", T0 + SINCE_MARGIN_MS - WINDOW_MS)]


def test_live_hold_0_recomputes_every_window_by_query() -> None:
    cfg = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="h"), aggregates=AggregateSettings(live_hold_s=0)
    )
    p = a_processor(cfg)
    assert p.live is None and p.sink.live is None


def test_live_hold_is_validated_and_the_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"aggregates.live_hold_s"):
        loads(ProcessorConfig, "[aggregates]\nlive_hold_s = -1\n")
