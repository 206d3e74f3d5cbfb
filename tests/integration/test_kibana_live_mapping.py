"""Kibana saved objects against the LIVE mapping of the real search server.

The processor's storage code installs its templates and writes golden
readings, one-minute aggregates recomputed from them, and alerts (one of them
acknowledged) under a unique index prefix. The mapping is then read back from
the server and every field a data view, visualization or dashboard control
uses must exist there with a compatible type. Each test runs on OpenSearch
(the stack's default) and on Elasticsearch 8 (its optional service, started
when missing): Kibana itself reads only the latter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud_processor.aggregates import DirtyWindows
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.storage import Storage
from deploy.local.stack import LocalStack
from kibana.app import live_check, live_field_types_for
from kibana.check import COMPATIBLE, check_fields, field_uses, spec_field_types
from kibana.objects import build_objects, to_ndjson
from stagekit.search import SearchSettings, make_backend
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import (
    Alert,
    AlertStatus,
    Reading,
    Rule,
    Severity,
    decode_as,
    decode_incident_change,
)
from testsupport.search import admin_settings

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages" / "valid"
NOW = 1_767_225_700_000


def golden_readings() -> list[Reading]:
    return [
        decode_as(p.read_bytes(), Reading, now_ms=NOW)
        for p in sorted(FIXTURES.glob("reading_*.json"))
    ]


@pytest.fixture(scope="module", params=["opensearch", "elasticsearch"])
def server(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[SearchSettings]:
    """The stack's OpenSearch, then its Elasticsearch (started for this module if needed)."""
    if request.param == "opensearch":
        yield admin_settings(stack["search"], backend="opensearch")
        return
    local = LocalStack()
    result = local.up(["elasticsearch"], timeout=240.0)
    yield SearchSettings(backend="elasticsearch", url=local.endpoints()["elasticsearch"]["url"])
    if result["elasticsearch"] == "started" and os.environ.get("THERMOWATCH_KEEP_STACK") != "1":
        local.down(["elasticsearch"])


@pytest.fixture
async def written(server: SearchSettings) -> AsyncIterator[tuple[SearchSettings, IndexNames]]:
    """A prefix whose indices hold real documents written by the processor's storage."""
    backend = make_backend(server)
    names = IndexNames(f"tk{uuid.uuid4().hex[:8]}-")
    st = Storage(backend, names, retry_initial_s=0.1, retry_max_s=1.0)
    try:
        await st.ensure_schema()
        readings = golden_readings()
        items = [
            BulkItem(
                Action.CREATE,
                names.readings_for(r.ts),
                reading_id(r),
                reading_doc(r, (52.52, 13.40) if n == 0 else None),
            )
            for n, r in enumerate(readings)
        ]
        totals = await st.write(items)
        assert (totals.stored, totals.rejected) == (len(readings), 0)
        dirty = DirtyWindows()
        for r in readings:
            if r.temp_c is not None:
                dirty.add(r.device_id, r.site, r.ts)
        windows = await st.compute_windows(dirty)
        assert windows, "golden readings produced no aggregate window"
        totals = await st.write(st.aggregate_items(windows))
        assert totals.rejected == 0
        opened = readings[0].ts
        alerts = [
            Alert(
                f"{readings[0].device_id}.{Rule.OFFLINE.value}.1",
                readings[0].device_id,
                readings[0].site,
                Rule.OFFLINE.value,
                Severity.CRITICAL,
                AlertStatus.OPEN,
                1,
                opened,
                opened,
                message="device offline",
            ),
            Alert(
                f"{readings[0].device_id}.{Rule.THRESHOLD_HIGH.value}.1",
                readings[0].device_id,
                readings[0].site,
                Rule.THRESHOLD_HIGH.value,
                Severity.WARNING,
                AlertStatus.RESOLVED,
                2,
                opened,
                opened + 60_000,
                resolved_at=opened + 60_000,
                value=31.5,
                threshold=30.0,
                score=0.5,
                message="too warm",
                clear_reason="below threshold",
                sensor_id=readings[0].sensor_id,
            ),
        ]
        totals = await st.write([st.alert_item(a, processed_at=NOW) for a in alerts])
        assert totals.rejected == 0
        await st.acknowledge(alerts[0].alert_id, by="kibana-test", now_ms=NOW)
        incidents = [
            decode_incident_change(p.read_bytes())
            for p in sorted((FIXTURES.parent / "incident_change").glob("[!i]*.json"))
        ]
        totals = await st.write([st.incident_item(c, processed_at=NOW) for c in incidents])
        assert (totals.stored, totals.rejected) == (len(incidents), 0)
        for spec in INDEXES:
            await backend.perform(search.refresh(names.pattern(spec)))
        yield server, names
    finally:
        # By name: Elasticsearch 8 refuses wildcard deletes (destructive_requires_name).
        with contextlib.suppress(SearchError):
            rows = await backend.perform(search.cat_indices(f"{names.prefix}*"))
            if rows:
                await backend.perform(search.delete_index(",".join(r["index"] for r in rows)))
        for spec in INDEXES:
            with contextlib.suppress(SearchError):
                await backend.perform(
                    search.Request("DELETE", f"/_index_template/{names.base(spec)}")
                )
        await backend.close()


def _count(server: SearchSettings, pattern: str, field: str | None = None) -> int:
    body = {"query": {"exists": {"field": field}}} if field else {"query": {"match_all": {}}}
    with requests.Session() as s:
        s.auth = (server.username, server.password) if server.username else None
        # per request: a session's verify loses to REQUESTS_CA_BUNDLE
        verify = server.ca_file or True
        resp = s.post(f"{server.url}/{pattern}/_count", json=body, timeout=30, verify=verify)
        resp.raise_for_status()
        return int(resp.json()["count"])


async def test_every_referenced_field_exists_in_the_live_mapping_with_the_right_type(
    written: tuple[SearchSettings, IndexNames],
) -> None:
    server, names = written
    objects = build_objects(names.prefix)
    patterns = sorted({o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"})
    assert patterns == sorted(names.pattern(s) for s in INDEXES)
    # the data views match indices that really hold documents
    for pattern in patterns:
        assert await asyncio.to_thread(_count, server, pattern) > 0, pattern

    live, problems = await asyncio.to_thread(live_field_types_for, server, patterns)
    assert problems == []
    uses = field_uses(objects)
    assert len(uses) > 40  # not vacuous: every column, time field, format and control
    for use in uses:
        got = live[use.data_view].get(use.field)
        assert got is not None, f"{use.object}: {use.field} missing from {use.data_view}"
        allowed = COMPATIBLE[use.need]
        assert not allowed or got in allowed, (
            f"{use.object}: {use.field} is {got}, needs {use.need}"
        )
        # and the live type is the one the processor's definitions promise
        assert got == spec_field_types(names.prefix)[use.data_view][use.field]
    assert check_fields(objects, live) == []
    # and the processor really writes every one of them (no panel stays empty)
    for pattern, field in sorted({(u.data_view, u.field) for u in uses}):
        assert await asyncio.to_thread(_count, server, pattern, field) > 0, (pattern, field)
    # the same check through the public entry point (thermowatch kibana check --search-url)
    assert await asyncio.to_thread(live_check, to_ndjson(objects), server) == []


async def test_a_field_the_live_mapping_lacks_or_types_differently_is_reported(
    written: tuple[SearchSettings, IndexNames],
) -> None:
    server, names = written
    objects = build_objects(names.prefix)
    lens = next(o for o in objects if o["id"] == f"{names.prefix}lens-temperature-over-time")
    layer = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    layer["columns"]["temp"]["sourceField"] = "temperature"
    layer["columns"]["device"]["sourceField"] = "anomaly_score"  # numeric: terms is fine
    layer["columns"]["time"]["sourceField"] = "device_id"  # keyword: not a date
    problems = [str(p) for p in await asyncio.to_thread(live_check, to_ndjson(objects), server)]
    readings = names.readings_pattern
    assert problems == [
        f"lens/{lens['id']}: field temperature (column temp (average)) not in mapping of "
        f"{readings}",
        f"lens/{lens['id']}: field device_id (column time (date_histogram)) is keyword in "
        f"{readings}, needs date",
    ]


async def test_check_command_against_the_live_server(
    written: tuple[SearchSettings, IndexNames],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from thermowatch.cli import main

    server, names = written
    argv = ["kibana", "check", "--prefix", names.prefix, "--search-url", server.url]
    argv += ["--search-backend", server.backend]
    if server.username:  # the password from the environment, never on the command line
        argv += ["--search-user", server.username, "--search-ca-file", server.ca_file]
        monkeypatch.setenv("SEARCH_PASSWORD", server.password)
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "ok" in out
