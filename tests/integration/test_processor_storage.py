"""Storage against the real search server: templates, idempotent writes, aggregates."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloud_processor.aggregates import DirtyWindows, WindowAggregate, aggregate_doc
from cloud_processor.batches import Prepared
from cloud_processor.chain import PendingWrite
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.sink import Sink
from cloud_processor.storage import Storage
from cloud_processor.testing import bare_sink, drop_prefix
from cloud_processor.windowfold import LiveWindows
from kibana.check import live_field_types, spec_field_types
from stagekit.search import api as search
from stagekit.search.indices import ALERTS, INDEXES, IndexNames
from telemetry_contract import Reading, decode_as
from testsupport.search import admin_backend, search_section

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages" / "valid"


@pytest.fixture
async def storage(stack: dict[str, Any]) -> AsyncIterator[Storage]:
    backend = admin_backend(stack["search"])
    names = IndexNames(f"t{uuid.uuid4().hex[:8]}-")
    st = Storage(backend, names, retry_initial_s=0.1, retry_max_s=1.0)
    await st.ensure_schema()
    yield st
    await drop_prefix(backend, names)
    await backend.close()


def golden_readings() -> list[Reading]:
    return [
        decode_as(p.read_bytes(), Reading, now_ms=1_767_225_700_000)
        for p in sorted(FIXTURES.glob("reading_*.json"))
    ]


def items_for(st: Storage, readings: list[Reading]) -> list[BulkItem]:
    return [
        BulkItem(Action.CREATE, st.names.readings_for(r.ts), reading_id(r), reading_doc(r))
        for r in readings
    ]


async def count(st: Storage, pattern: str) -> int:
    await st.backend.perform(search.refresh(pattern))
    answer = await st.backend.perform(search.search(pattern, {"size": 0, "track_total_hits": True}))
    return int(answer["hits"]["total"]["value"])


async def test_schema_setup_is_idempotent_and_mappings_exact(storage: Storage) -> None:
    await storage.ensure_schema()  # second time: no error
    await storage.write(items_for(storage, golden_readings()[:1]))
    got = await storage.backend.perform(
        search.Request("GET", f"/{storage.names.readings_pattern}/_mapping")
    )
    # the golden readings' month, and the current month (created at start-up)
    assert len(got) == 2, sorted(got)
    for mapping in got.values():
        props = mapping["mappings"]["properties"]
        assert mapping["mappings"]["dynamic"] == "strict"
        assert props["device_id"] == {"type": "keyword"}
        assert props["site"] == {"type": "keyword"}
        assert props["temp_c"] == {"type": "float"}
        assert props["anomaly_score"] == {"type": "float"}
        assert props["@timestamp"]["type"] == "date"
        assert props["location"] == {"type": "geo_point"}
    alerts = await storage.backend.perform(
        search.Request("GET", f"/{storage.names.alerts}/_mapping")
    )
    assert alerts[storage.names.alerts]["mappings"]["properties"]["rule"] == {"type": "keyword"}


async def test_start_up_creates_every_index_so_data_views_resolve_before_the_first_reading(
    storage: Storage,
) -> None:
    """Kibana shows "field not found" for a data view whose pattern matches no
    index: after start-up, before any document, every pattern matches an index
    with every field of its definition. A second replica starting at the same
    moment creates the same indices without an error."""
    other = Storage(storage.backend, storage.names, retry_initial_s=0.1, retry_max_s=1.0)
    await asyncio.gather(storage.ensure_schema(), other.ensure_schema())
    expected = sorted(storage.names.for_ts(spec, int(time.time() * 1000)) for spec in INDEXES)
    rows = await storage.backend.perform(search.cat_indices(f"{storage.names.prefix}*"))
    assert sorted(r["index"] for r in rows) == expected
    for spec in INDEXES:
        pattern = storage.names.pattern(spec)
        answer = await storage.backend.perform(search.get_mapping(pattern))
        types, conflicts = live_field_types(answer)
        assert conflicts == [] and answer, pattern
        assert types == spec_field_types(storage.names.prefix)[pattern], pattern
        assert await count(storage, pattern) == 0  # empty charts, not errors


async def test_golden_readings_stored_exactly_and_never_twice(storage: Storage) -> None:
    readings = golden_readings()
    assert len(readings) >= 5
    first = await storage.write(items_for(storage, readings))
    assert (first.stored, first.duplicates, first.rejected) == (len(readings), 0, 0)
    again = await storage.write(items_for(storage, readings))
    assert (again.stored, again.duplicates) == (0, len(readings))
    assert await count(storage, storage.names.readings_pattern) == len(readings)
    for r in readings:
        got = await storage.backend.perform(
            search.get_doc(storage.names.readings_for(r.ts), reading_id(r))
        )
        assert got["_source"] == reading_doc(r)


async def test_windows_recomputed_from_stored_readings(storage: Storage) -> None:
    t0 = 1_767_225_600_000
    temps = [4.0, 5.0, 6.0, 4.5]
    readings = [
        Reading(device_id="d1", sensor_id="host", site="s1", seq=i, ts=t0 + i * 10_000, temp_c=t)
        for i, t in enumerate(temps)
    ]
    await storage.write(items_for(storage, readings))
    dirty = DirtyWindows()
    for r in readings:
        dirty.add(r.device_id, r.site, r.ts)
    (w,) = await storage.compute_windows(dirty)
    assert (w.count, w.temp_min, w.temp_max, w.temp_last) == (4, 4.0, 6.0, 4.5)
    assert w.temp_mean == pytest.approx(4.875)
    # a late reading of the same minute is folded in; a redelivered one is not
    late = Reading(device_id="d1", sensor_id="host", site="s1", seq=9, ts=t0 + 59_000, temp_c=10.0)
    await storage.write(items_for(storage, [late, readings[0]]))
    dirty.add("d1", "s1", late.ts)
    (w2,) = await storage.compute_windows(dirty)
    assert (w2.count, w2.temp_max, w2.temp_last) == (5, 10.0, 10.0)
    await storage.write(storage.aggregate_items([w2]))
    await storage.write(storage.aggregate_items([w2]))
    assert await count(storage, storage.names.aggregates_pattern) == 1


async def test_windows_folded_in_memory_equal_the_recomputed_ones(storage: Storage) -> None:
    """The sink's in-memory windows against the real server's aggregation:
    32-bit float fields, temperatures that are no 1/16 step, duplicates, two
    readings in one millisecond, a window spanning two flushes."""
    t0 = 1_767_225_600_000
    now = [t0]
    live: LiveWindows[str] = LiveWindows(hold_ms=120_000)
    sink = bare_sink(storage, live=live, now_ms=lambda: now[0])
    live.check("p0", 0, t0)
    temps = [21.3, -18.7, 4.0625, 30.05, 5.1, 22.0, 0.1, 19.95]
    readings = [
        Reading(
            device_id=f"d{i % 3}",
            sensor_id="probe",
            site="s1",
            seq=i,
            ts=t0 + (i * 7_000) % 150_000 + (1 if i == 5 else 0),
            temp_c=temps[i % len(temps)] + i / 100,
        )
        for i in range(40)
    ]
    readings.append(msgspec.structs.replace(readings[7], seq=99))  # same instant, another seq
    requeried = []
    for part in (readings[:25], readings[20:]):  # 20..24 twice: redelivered
        prepared = Prepared()
        prepared.readings = items_for(storage, part)
        prepared.windowed = [("p0", r) for r in part]
        await sink.write(PendingWrite(prepared))
        requeried.append(len(sink.requery))
        await sink.write_windows()
    assert requeried == [0, 0] and len(live) > 0  # all from memory, no query
    got = await documents_equal_the_query(storage, readings, storage.compute_windows)
    assert len(got) == 9


async def documents_equal_the_query(
    storage: Storage,
    readings: list[Reading],
    compute: Callable[[DirtyWindows], Awaitable[list[WindowAggregate]]],
) -> list[dict[str, Any]]:
    """The window documents stored, checked against the server's aggregation
    of ``readings``' windows (``compute``); sorted by device and start."""
    dirty = DirtyWindows()
    for r in readings:
        dirty.add(r.device_id, r.site, r.ts)
    want = sorted(await compute(dirty), key=lambda w: (w.device_id, w.start))
    await storage.backend.perform(search.refresh(storage.names.aggregates_pattern))
    answer = await storage.backend.perform(
        search.search(storage.names.aggregates_pattern, {"size": 100})
    )
    got = sorted(
        (h["_source"] for h in answer["hits"]["hits"]),
        key=lambda d: (d["device_id"], d["@timestamp"]),
    )
    assert [aggregate_doc(w) for w in want] == got
    return got


async def test_a_new_owner_resumes_windows_from_their_documents(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor taking a partition over seeds its windows with the real
    server's documents (one multi-get: found, not found, no such index) and
    writes what the aggregation over all stored readings computes, without it."""
    t0 = 1_767_225_600_000
    earlier = t0 - 40 * 86_400_000  # another month: no aggregates index

    def r(device: int, seq: int, ts: int, temp: float) -> Reading:
        return Reading(
            device_id=f"d{device}", sensor_id="probe", site="s1", seq=seq, ts=ts, temp_c=temp
        )

    async def write(sink: Sink, readings: list[Reading]) -> None:
        prepared = Prepared()
        prepared.readings = items_for(storage, readings)
        prepared.windowed = [("p0", x) for x in readings]
        await sink.write(PendingWrite(prepared))
        await sink.write_windows()

    first: LiveWindows[str] = LiveWindows(hold_ms=10**12)
    first.check("p0", 0, t0)
    before = [r(d, s, t0 + s * 9_000, 21.3 + d + s / 16) for d in range(3) for s in range(1, 4)]
    await write(bare_sink(storage, live=first, now_ms=lambda: t0), before)

    queries: list[int] = []
    compute = storage.compute_windows

    async def counted(dirty: DirtyWindows) -> list[WindowAggregate]:
        queries.append(len(dirty))
        return await compute(dirty)

    monkeypatch.setattr(storage, "compute_windows", counted)
    taker: LiveWindows[str] = LiveWindows(hold_ms=10**12)
    assert not taker.check("p0", 9, t0 + 20_000)  # committed by the first owner
    after = [r(d, 10, t0 + 5_000, -4.0625 * d) for d in range(4)]  # d3: no document
    after.append(r(0, 11, earlier, 19.95))
    await write(bare_sink(storage, live=taker, now_ms=lambda: t0 + 20_000), after)
    assert queries == [] and taker.unseeded() == []

    got = await documents_equal_the_query(storage, before + after, compute)
    assert [(d["device_id"], d["count"]) for d in got] == [
        ("d0", 1),
        ("d0", 4),
        ("d1", 4),
        ("d2", 4),
        ("d3", 1),
    ]


async def test_unknown_field_is_rejected_not_retried_forever(storage: Storage) -> None:
    item = BulkItem(
        Action.CREATE,
        storage.names.readings_for(1_767_225_600_000),
        "x:1",
        {"@timestamp": 1_767_225_600_000, "nonsense": 1},
    )
    totals = await storage.write([item])
    assert (totals.stored, totals.rejected) == (0, 1)


async def test_retention_deletes_only_whole_months_past_retention(storage: Storage) -> None:
    old = Reading(
        device_id="d1", sensor_id="host", site="s1", seq=1, ts=1_700_000_000_000, temp_c=1.0
    )  # 2023-11
    new = Reading(
        device_id="d1", sensor_id="host", site="s1", seq=2, ts=1_767_225_600_000, temp_c=1.0
    )  # 2026-01
    await storage.write(items_for(storage, [old, new]))
    assert await storage.retention_support() in ("none", "ism", "ilm")
    doomed = await storage.delete_expired(now_ms=1_767_225_600_000, retention_days=365)
    assert doomed == [storage.names.readings_for(old.ts)]
    assert await count(storage, storage.names.readings_pattern) == 1


def test_ack_command_marks_alert_and_survives_processor_updates(
    stack: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from telemetry_contract import Alert, AlertStatus, Severity
    from thermowatch.cli import main

    names = IndexNames(f"t{uuid.uuid4().hex[:8]}-")
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        search_section(stack["search"], index_prefix=names.prefix),
        encoding="utf-8",
    )
    alert = Alert(
        "d1.threshold_high.1",
        "d1",
        "s1",
        "threshold_high",
        Severity.WARNING,
        AlertStatus.OPEN,
        1,
        1,
        1,
        value=9.0,
    )

    async def setup() -> None:
        backend = admin_backend(stack["search"])
        st = Storage(backend, names)
        await st.ensure_schema()
        await st.write([st.alert_item(alert)])
        await backend.close()

    async def later_update_and_read() -> dict[str, Any]:
        from msgspec.structs import replace

        backend = admin_backend(stack["search"])
        st = Storage(backend, names)
        await st.write([st.alert_item(replace(alert, status=AlertStatus.RESOLVED, version=2))])
        got: dict[str, Any] = await backend.perform(search.get_doc(names.alerts, alert.alert_id))
        await drop_prefix(backend, names)
        await backend.close()
        return got["_source"]

    asyncio.run(setup())
    assert main(["processor", "ack", alert.alert_id, "-c", str(cfg), "--by", "tester"]) == 0
    assert '"acknowledged_by": "tester"' in capsys.readouterr().out
    assert main(["processor", "ack", "no-such-alert", "-c", str(cfg)]) == 1
    doc = asyncio.run(later_update_and_read())
    assert doc["status"] == "resolved" and doc["acknowledged"] is True


async def test_an_alerts_index_created_by_an_earlier_release_takes_new_fields(
    stack: dict[str, Any],
) -> None:
    """The alerts index lives for ever and its mapping is strict: start-up adds
    the fields a newer release writes (here ``confirmed``), or every alert
    document would be refused."""
    from telemetry_contract import Alert, AlertStatus, Rule, Severity

    backend = admin_backend(stack["search"])
    names = IndexNames(f"t{uuid.uuid4().hex[:8]}-")
    old = ALERTS.mappings()
    del old["properties"]["confirmed"]  # the mapping as the release before wrote it
    try:
        await backend.perform(search.Request("PUT", f"/{names.alerts}", body={"mappings": old}))
        st = Storage(backend, names, retry_initial_s=0.1, retry_max_s=1.0)
        await st.ensure_schema()
        alert = Alert(
            "d1.edge_anomaly.1",
            "d1",
            "s1",
            Rule.EDGE_ANOMALY,
            Severity.CRITICAL,
            AlertStatus.OPEN,
            2,
            1,
            2,
            message="x (confirmed by threshold_high)",
            confirmed=True,
        )
        totals = await st.write([st.alert_item(alert)], ordered=True)
        assert (totals.stored, totals.rejected) == (1, 0)
        got = await backend.perform(search.get_doc(names.alerts, alert.alert_id))
        assert got["_source"]["confirmed"] is True
    finally:
        await drop_prefix(backend, names)
        await backend.close()


async def test_last_heard_is_the_newest_window_of_each_device_since(storage: Storage) -> None:
    t0 = 1_767_225_600_000

    def window(device: str, site: str, minute: int, last_second: int) -> WindowAggregate:
        start = t0 + minute * 60_000
        last = start + last_second * 1000
        return WindowAggregate(device, site, start, 1, 4.0, 4.0, 4.0, 4.0, last, 4.0, minute)

    windows = [
        window("d1", "s1", 0, 10),
        window("d1", "s1", 3, 20),  # d1's newest
        window("d2", "s1", 1, 5),
        window("d2", "s2", 2, 7),  # moved to another site: the newest wins
        window("old", "s1", -30, 0),  # before since
    ]
    await storage.write(storage.aggregate_items(windows))
    got = await storage.load_last_heard(since_ms=t0 - 60_000)
    assert sorted(got) == [("d1", "s1", t0 + 200_000), ("d2", "s2", t0 + 127_000)]
    assert sorted(await storage.load_last_heard(since_ms=t0 - 60_000, page=1)) == sorted(got)
    assert await storage.load_last_heard(since_ms=t0 + 600_000) == []
