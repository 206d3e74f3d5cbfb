"""Retry policy of durable writes, with a scripted fake search backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from cloud_processor.documents import Action, BulkItem
from cloud_processor.storage import StoppedError, Storage
from stagekit.search.api import Request, SearchError
from stagekit.search.indices import IndexNames


class ScriptedBackend:
    """Answers bulk requests from a script: an exception, or per-item statuses."""

    name = "fake"

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.bulks: list[list[str]] = []

    async def perform(self, request: Request) -> Any:
        assert request.path == "/_bulk"
        assert isinstance(request.body, bytes)
        lines = [msgspec.json.decode(x) for x in request.body.splitlines()]
        ids = [next(iter(a.values()))["_id"] for a in lines[::2]]
        self.bulks.append(ids)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        statuses = step if isinstance(step, list) else [step] * len(ids)
        return {"errors": True, "items": [{"create": {"status": s}} for s in statuses]}

    async def close(self) -> None:
        pass


def items(n: int) -> list[BulkItem]:
    return [BulkItem(Action.CREATE, "i", f"d:{i}", {"seq": i}) for i in range(n)]


def storage(backend: ScriptedBackend, states: list[bool] | None = None) -> Storage:
    return Storage(
        backend,
        IndexNames("x-"),
        retry_initial_s=0.001,
        retry_max_s=0.002,
        on_state=None if states is None else states.append,
    )


async def test_server_down_is_retried_until_it_answers() -> None:
    down = SearchError("connection refused")
    backend = ScriptedBackend([down, down, SearchError("busy", status=503), 201])
    states: list[bool] = []
    totals = await storage(backend, states).write(items(3))
    assert totals.stored == 3 and len(backend.bulks) == 4
    assert states == [False, True]


async def test_item_level_429_resends_only_those_items() -> None:
    backend = ScriptedBackend([[201, 429, 409, 429], [201, 201]])
    totals = await storage(backend).write(items(4))
    assert backend.bulks[1] == ["d:1", "d:3"]
    assert (totals.stored, totals.duplicates, totals.rejected, totals.retries) == (3, 1, 0, 1)


async def test_non_retriable_request_error_propagates() -> None:
    backend = ScriptedBackend([SearchError("forbidden", status=403)])
    try:
        await storage(backend).write(items(1))
    except SearchError as exc:
        assert exc.status == 403
    else:  # pragma: no cover
        raise AssertionError("expected SearchError")


async def test_large_writes_are_split_into_bulk_chunks() -> None:
    backend = ScriptedBackend([201, 201, 201])
    st = Storage(backend, IndexNames("x-"), bulk_max_docs=2)
    totals = await st.write(items(5))
    assert [len(b) for b in backend.bulks] == [2, 2, 1] and totals.stored == 5


class RecordingBackend:
    """Answers every request with {} except the probes it is told to fail."""

    name = "fake"

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing
        self.requests: list[Request] = []

    async def perform(self, request: Request) -> Any:
        self.requests.append(request)
        if request.path in self.missing:
            raise SearchError("no handler", status=400)
        return {"version": {"number": "8.15.0"}}

    async def close(self) -> None:
        pass


async def test_ilm_policy_attached_to_monthly_templates_when_cluster_has_ilm() -> None:
    backend = RecordingBackend(missing=set())
    st = Storage(backend, IndexNames("x-"), retention_days=90)
    await st.ensure_schema()
    assert st.lifecycle == "ilm"
    by_path = {r.path: r for r in backend.requests}
    policy = by_path["/_ilm/policy/x-retention"]
    assert policy.method == "PUT"
    assert policy.body["policy"]["phases"]["delete"]["min_age"] == "121d"  # type: ignore[index]
    readings = by_path["/_index_template/x-readings"].body
    settings = readings["template"]["settings"]  # type: ignore[index]
    assert settings["index.lifecycle.name"] == "x-retention"
    alerts = by_path["/_index_template/x-alerts"].body
    assert "index.lifecycle.name" not in alerts["template"]["settings"]  # type: ignore[index]


async def test_no_policy_without_ilm() -> None:
    backend = RecordingBackend(missing={"/_ilm/status", "/_plugins/_ism/policies"})
    st = Storage(backend, IndexNames("x-"), retention_days=90)
    await st.ensure_schema()
    assert st.lifecycle == "none"
    assert not any(r.path.startswith("/_ilm/policy") for r in backend.requests)
    readings = next(r for r in backend.requests if r.path == "/_index_template/x-readings")
    assert "index.lifecycle.name" not in readings.body["template"]["settings"]  # type: ignore[index]


class DownBackend:
    """A search server that never answers."""

    name = "fake"

    async def perform(self, request: Request) -> Any:
        raise SearchError("connection refused")

    async def close(self) -> None:
        pass


async def test_start_up_waits_for_the_server_but_stops_promptly_when_told() -> None:
    st = Storage(DownBackend(), IndexNames("x-"), retry_initial_s=30.0, retry_max_s=60.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    with pytest.raises(StoppedError):
        await st.ensure_schema(stop=stop)
    assert time.monotonic() - started < 5  # not the 30 s backoff
    assert st.available is False
    stop.set()
    with pytest.raises(StoppedError):
        await st.load_alerts(since_ms=0, stop=stop)


class ExistingIndexBackend(RecordingBackend):
    """Index creations answered as a server answers them when ``exists`` already do."""

    def __init__(self, exists: set[str], refuse: dict[str, SearchError] | None = None) -> None:
        super().__init__(missing=set())
        self.exists = exists
        self.refuse = refuse or {}

    async def perform(self, request: Request) -> Any:
        name = request.path.lstrip("/")
        if request.method == "PUT" and "/" not in name:
            self.requests.append(request)
            if name in self.refuse:
                raise self.refuse[name]
            if name in self.exists:
                raise SearchError(
                    f"PUT /{name}: status=400",
                    status=400,
                    body={"error": {"type": "resource_already_exists_exception"}},
                )
            return {"acknowledged": True, "index": name}
        return await super().perform(request)


def _created(backend: RecordingBackend) -> list[str]:
    return [
        r.path.lstrip("/")
        for r in backend.requests
        if r.method == "PUT" and "/" not in r.path.lstrip("/")
    ]


async def test_start_up_creates_this_months_readings_aggregates_alerts_and_incidents() -> None:
    """A Kibana data view needs an index to resolve its fields: the processor
    creates one per index family at start-up, for the month of "now"."""
    backend = ExistingIndexBackend(exists=set())
    st = Storage(backend, IndexNames("x-"))
    await st.ensure_schema(now_ms=1_767_225_600_000)  # 2026-01-01T00:00Z
    assert _created(backend) == [
        "x-readings-2026.01",
        "x-agg1m-2026.01",
        "x-alerts",
        "x-incidents",
    ]
    # the templates are in place before the first index is created from them
    order = [r.path for r in backend.requests]
    last_template = max(i for i, p in enumerate(order) if p.startswith("/_index_template/"))
    assert order.index("/x-readings-2026.01") > last_template


async def test_an_index_that_already_exists_is_fine_other_refusals_are_not() -> None:
    names = ["x-readings-2025.12", "x-agg1m-2025.12", "x-alerts", "x-incidents"]
    # an earlier start, or another replica creating them at the same moment
    backend = ExistingIndexBackend(exists=set(names))
    st = Storage(backend, IndexNames("x-"))
    assert await st.create_indices(now_ms=1_767_225_599_999) == names
    refused = SearchError("PUT /x-agg1m-2025.12: status=400 error=invalid_index_name", status=400)
    backend = ExistingIndexBackend(exists=set(), refuse={"x-agg1m-2025.12": refused})
    st = Storage(backend, IndexNames("x-"))
    with pytest.raises(SearchError, match="invalid_index_name"):
        await st.create_indices(now_ms=1_767_225_599_999)
