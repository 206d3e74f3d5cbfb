"""Golden messages become exactly the expected documents; bulk semantics; schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloud_processor.aggregates import Slice, WindowAggregate, aggregate_doc, slices_query
from cloud_processor.documents import (
    Action,
    BulkItem,
    ItemResult,
    bulk_body,
    classify_bulk,
    reading_doc,
    reading_id,
)
from stagekit.search.indices import AGGREGATES, ALERTS, INDEXES, READINGS, IndexNames
from telemetry_contract import Reading, decode_as

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages" / "valid"
NOW = 1_767_225_700_000

_BASE = {
    "@timestamp": 1767225600000,
    "device_id": "s1-d01",
    "sensor_id": "28-0316a2791aff",
    "site": "s1",
    "schema_version": 1,
}

#: file -> (index, _id, document): what the processor must store for each golden reading.
EXPECTED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "reading_ok.json": (
        "tw-readings-2026.01",
        "s1-d01:1042",
        {
            **_BASE,
            "seq": 1042,
            "temp_c": -18.4375,
            "quality": "ok",
            "anomaly_score": 0.12,
            "is_anomaly": False,
            "detector": "hst",
        },
    ),
    "reading_anomaly.json": (
        "tw-readings-2026.01",
        "s1-d01:1043",
        {
            **_BASE,
            "@timestamp": 1767225601000,
            "seq": 1043,
            "temp_c": -2.5,
            "quality": "ok",
            "anomaly_score": 0.97,
            "is_anomaly": True,
            "detector": "hst",
        },
    ),
    "reading_crc_error.json": (
        "tw-readings-2026.01",
        "s1-d01:1045",
        {
            **_BASE,
            "@timestamp": 1767225603000,
            "seq": 1045,
            "quality": "crc_error",
            "is_anomaly": False,
        },
    ),
}


def _reading(name: str) -> Reading:
    return decode_as((FIXTURES / name).read_bytes(), Reading, now_ms=NOW)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_reading_becomes_expected_document(name: str) -> None:
    index, doc_id, doc = EXPECTED[name]
    r = _reading(name)
    assert IndexNames("tw-").readings_for(r.ts) == index
    assert reading_id(r) == doc_id
    assert reading_doc(r) == doc


def test_every_golden_reading_maps_onto_the_readings_mapping() -> None:
    files = sorted(FIXTURES.glob("reading_*.json"))
    assert files, "golden readings missing"
    allowed = {f.name for f in READINGS.fields}
    ids = set()
    for path in files:
        r = _reading(path.name)
        doc = reading_doc(r)
        assert set(doc) <= allowed, path.name
        raw = json.loads(path.read_bytes())
        # every non-null field of the message is stored, under the same value
        for key, value in raw.items():
            if key in ("type", "ts") or value is None:
                continue
            assert doc[key] == value, (path.name, key)
        assert doc["@timestamp"] == raw["ts"]
        ids.add(reading_id(r))
    assert len(ids) == len(files)  # distinct seqs: distinct ids


def test_location_is_a_geo_point() -> None:
    doc = reading_doc(_reading("reading_ok.json"), (52.52, 13.405))
    assert doc["location"] == {"lat": 52.52, "lon": 13.405}


def test_bulk_body_is_ndjson_with_create_and_deterministic_id() -> None:
    r = _reading("reading_ok.json")
    body = bulk_body(
        [BulkItem(Action.CREATE, "tw-readings-2026.01", reading_id(r), reading_doc(r))]
    )
    lines = body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0]) == {
        "create": {"_index": "tw-readings-2026.01", "_id": "s1-d01:1042"}
    }
    assert json.loads(lines[1]) == EXPECTED["reading_ok.json"][2]


def test_classify_bulk_409_on_create_is_already_stored_but_not_on_index() -> None:
    items = [BulkItem(Action.CREATE, "i", "a", {}), BulkItem(Action.INDEX, "i", "b", {})]
    answer = {"items": [{"create": {"status": 409}}, {"index": {"status": 409}}]}
    assert classify_bulk(answer, items).results == [ItemResult.DUPLICATE, ItemResult.RETRY]


def test_classify_bulk_mismatched_answer_retries_everything() -> None:
    items = [BulkItem(Action.CREATE, "i", "a", {})] * 2
    assert classify_bulk({"items": []}, items).retry_positions() == [0, 1]


def test_mappings_have_exact_types() -> None:
    props = READINGS.mappings()["properties"]
    assert props["device_id"] == {"type": "keyword"}
    assert props["site"] == {"type": "keyword"}
    assert props["sensor_id"] == {"type": "keyword"}
    assert props["temp_c"] == {"type": "float"}
    assert props["anomaly_score"] == {"type": "float"}
    assert props["@timestamp"]["type"] == "date"
    assert props["location"] == {"type": "geo_point"}
    assert READINGS.mappings()["dynamic"] == "strict"
    assert ALERTS.mappings()["properties"]["alert_id"] == {"type": "keyword"}
    assert ALERTS.mappings()["properties"]["score"] == {"type": "float"}
    assert AGGREGATES.mappings()["properties"]["count"] == {"type": "integer"}


def test_field_definitions_carry_units_for_dashboards() -> None:
    temps = [f for spec in INDEXES for f in spec.fields if f.name.startswith("temp_")]
    assert temps and all(f.unit == "°C" for f in temps)
    for spec in INDEXES:
        names = [f.name for f in spec.fields]
        assert len(names) == len(set(names)), spec.key
        assert spec.time_field in names


def test_aggregate_doc_fits_its_mapping() -> None:
    w = WindowAggregate("d1", "s1", 60_000, 3, 1.0, 3.0, 2.0, 3.0, 119_000, 6.0, 9)
    doc = aggregate_doc(w)
    assert set(doc) <= {f.name for f in AGGREGATES.fields}
    assert doc["window_end"] == 120_000


def test_slices_query_is_json_serialisable_and_filters_ok_readings() -> None:
    q = slices_query([Slice(("d1",), 0, 60_000)])
    assert msgspec.json.decode(msgspec.json.encode(q)) == q
    assert {"term": {"quality": "ok"}} in q["query"]["bool"]["filter"]
