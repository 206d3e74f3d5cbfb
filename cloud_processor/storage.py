"""Storage over the search port: schema setup, durable bulk writes, queries.

Delivery guarantee of this hop: :meth:`Storage.write` returns only when every
document is stored (or was already stored: a 409 on ``create``), retrying
429s, server errors and an unreachable server with capped exponential backoff
for as long as it takes. Only a document the server rejects as malformed
(a 4xx other than 409/429) is given up on, counted and logged, because
retrying it cannot succeed. The caller commits Kafka offsets after it returns.
At start-up (schema, alert state) the same waits end with :class:`StoppedError`
as soon as the stage is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cloud_processor import lifecycle
from cloud_processor.aggregates import (
    MAX_SLICES_PER_QUERY,
    DirtyWindows,
    WindowAggregate,
    aggregate_doc,
    aggregate_id,
    last_heard_query,
    parse_windows,
    slices_query,
    window_from_doc,
)
from cloud_processor.documents import (
    Action,
    BulkItem,
    ItemResult,
    bulk_body,
    classify_bulk,
)
from cloud_processor.quarantine import SKIPPED_LOG_LINES, SKIPPED_LOG_PER_S
from stagekit.backoff import Backoff, sleep_or_stop
from stagekit.ratelog import RateLimitedLog
from stagekit.search import api as search
from stagekit.search.alerts import alert_doc, alert_from_doc
from stagekit.search.api import SearchBackend, SearchError
from stagekit.search.incidents import incident_doc, incident_from_doc
from stagekit.search.indices import INDEXES, IndexNames, index_templates
from stagekit.search.lifecycle import replica_problem
from telemetry_contract import Alert, ContractError, IncidentChange, printable

__all__ = ["BulkTotals", "StoppedError", "Storage", "unless_stopped"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Window documents per multi-get when a new owner resumes windows.
MGET_MAX_DOCS = 1000


class StoppedError(Exception):
    """The stage was told to stop while waiting for a server (at start-up)."""


async def unless_stopped(what: str, call: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await ``call``, or raise :class:`StoppedError` as soon as ``stop`` is set.

    A request to a server that does not answer can take its whole timeout;
    a stage told to stop meanwhile leaves it behind instead of waiting.
    """
    task = asyncio.ensure_future(call)
    if stop is None:
        return await task
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise StoppedError(f"stopped while waiting for {what}")


@dataclass(slots=True)
class BulkTotals:
    """What one :meth:`Storage.write` did."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    #: ``_id`` of every item answered 409 (already stored) ...
    duplicate_ids: set[str] = field(default_factory=set)
    #: ... and of every item given up on.
    rejected_ids: set[str] = field(default_factory=set)


class Storage:
    """Index templates, durable bulk writes, aggregates and alert queries."""

    def __init__(
        self,
        backend: SearchBackend,
        names: IndexNames,
        *,
        bulk_max_docs: int = 5000,
        bulk_concurrency: int = 1,
        retention_days: int = 0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 15.0,
        shards: int = 1,
        replicas: int = 0,
        refresh_interval: str = "5s",
        on_bulk: Callable[[float, BulkTotals], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.backend = backend
        self.names = names
        self._rejected_log = RateLimitedLog(lines=SKIPPED_LOG_LINES, per_s=SKIPPED_LOG_PER_S)
        self._bulk_max = bulk_max_docs
        self._concurrency = max(1, bulk_concurrency)
        self._retention_days = retention_days
        #: "ilm", "ism" or "none" once :meth:`ensure_schema` has run ...
        self.lifecycle: lifecycle.Lifecycle = "none"
        #: ... and the name of the retention policy it installed (None: none).
        self.policy: str | None = None
        self._retry_initial = retry_initial_s
        self._retry_max = max(retry_max_s, retry_initial_s)
        self._shards = shards
        self._replicas = replicas
        self._refresh_interval = refresh_interval
        self._on_bulk = on_bulk
        self._on_state = on_state
        #: None until the first request; then whether the server answered.
        self.available: bool | None = None

    def _set_available(self, up: bool) -> None:
        if up != self.available:
            self.available = up
            if up:
                log.info("event=search_available backend=%s", self.backend.name)
            else:
                log.warning("event=search_unavailable backend=%s", self.backend.name)
            if self._on_state:
                self._on_state(up)

    def _backoff(self) -> Backoff:
        return Backoff(self._retry_initial, self._retry_max, jitter="equal")

    @property
    def backend_name(self) -> str:
        """The backend's name (``opensearch``, ``elasticsearch``), for the logs."""
        return self.backend.name

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[T]], stop: asyncio.Event | None = None
    ) -> T:
        """Run ``call`` until it succeeds or fails for a non-retriable reason.

        With ``stop`` (start-up), raise :class:`StoppedError` as soon as it is set
        instead of waiting on; without it (writes), retry for as long as it takes.
        """
        backoff = self._backoff()
        while True:
            try:
                result = await unless_stopped(f"the search server ({what})", call(), stop)
            except SearchError as exc:
                if not exc.retriable:
                    raise
                self._set_available(False)
                wait = backoff.next()
                log.warning(
                    "event=search_retry op=%s attempt=%d delay_s=%.2f error=%s",
                    what,
                    backoff.attempts,
                    wait,
                    exc,
                )
                if await sleep_or_stop(wait, stop):
                    raise StoppedError(f"stopped while the search server is down ({what})") from exc
                continue
            self._set_available(True)
            return result

    def _caller(self, stop: asyncio.Event | None) -> lifecycle.Call:
        """``call(what, request)``: one request, retried like every start-up request."""

        async def call(what: str, request: search.Request) -> Any:
            return await self._retrying(what, lambda: self.backend.perform(request), stop)

        return call

    async def ensure_schema(
        self, *, stop: asyncio.Event | None = None, now_ms: int | None = None
    ) -> dict[str, Any]:
        """Create or update the index templates, and create the indices (idempotent).

        The indices (see :meth:`create_indices`) exist from the start so that a
        Kibana data view resolves its fields before the first reading arrives.

        Returns the server's ``GET /`` answer (name, version, distribution).
        Waits for the server to answer; :class:`StoppedError` when ``stop`` is set meanwhile.
        """
        info: dict[str, Any] = await self._retrying(
            "info", lambda: self.backend.perform(search.info()), stop
        )
        call = self._caller(stop)
        self.lifecycle = await lifecycle.probe(call, self.backend.name)
        # Before the indices: ISM attaches its policy to an index when it is created.
        self.policy = await lifecycle.install_policy(
            call, self.lifecycle, self.names, self._retention_days
        )
        if self.policy is None:
            self.lifecycle = "none"  # refused: retention is not managed
        for name, body in index_templates(
            self.names,
            shards=self._shards,
            replicas=self._replicas,
            refresh_interval=self._refresh_interval,
            # ILM is named by the template; ISM's policy names its indices itself.
            lifecycle_policy=self.policy if self.lifecycle == "ilm" else None,
        ).items():
            await self._retrying(
                "put_template",
                lambda name=name, body=body: self.backend.perform(  # type: ignore[misc]
                    search.put_index_template(name, body)
                ),
                stop,
            )
        await self.create_indices(now_ms=now_ms, stop=stop)
        health: dict[str, Any] = await call("cluster_health", search.cluster_health())
        if problem := replica_problem(self._replicas, int(health.get("number_of_data_nodes", 1))):
            log.warning("event=replicas_unassignable detail=%s", problem)
        # Indices created by an earlier release (the alerts index lives for
        # ever, the current month's readings for weeks) get the fields added
        # since: with "dynamic": "strict" a document with an unmapped field is
        # refused.
        for spec in INDEXES:
            properties = spec.mappings()["properties"]
            await self._retrying(
                "put_mapping",
                lambda spec=spec, properties=properties: self.backend.perform(  # type: ignore[misc]
                    search.put_mapping(self.names.pattern(spec), properties)
                ),
                stop,
            )
        return info

    async def create_indices(
        self, *, now_ms: int | None = None, stop: asyncio.Event | None = None
    ) -> list[str]:
        """Create, from their templates, the indices a reading written now would need.

        The alerts and incidents indices, and the readings and aggregates indices of the month
        of ``now_ms`` (default: the wall clock). A data view whose pattern
        matches no index shows "field not found" errors instead of empty
        charts. An index that exists already (an earlier start, or another
        replica creating it at the same moment: 400
        ``resource_already_exists_exception``) is fine. Returns the names.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        names = [self.names.for_ts(spec, now) for spec in INDEXES]
        for name in names:
            try:
                await self._retrying(
                    "create_index",
                    lambda name=name: self.backend.perform(  # type: ignore[misc]
                        search.create_index(name)
                    ),
                    stop,
                )
            except SearchError as exc:
                if not _already_exists(exc):
                    raise
        return names

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        """Store every item (see the module docstring for the guarantee).

        Items are sent in chunks of ``bulk_max_docs``; unless ``ordered``, up to
        ``bulk_concurrency`` chunks are in flight at once (readings do not care
        in which order they land; alert updates do, and pass ``ordered``).
        """
        totals = BulkTotals()
        chunks = [list(items[i : i + self._bulk_max]) for i in range(0, len(items), self._bulk_max)]
        if ordered or self._concurrency == 1 or len(chunks) < 2:
            for chunk in chunks:
                await self._write_chunk(chunk, totals)
            return totals
        gate = asyncio.Semaphore(self._concurrency)

        async def one(chunk: list[BulkItem]) -> None:
            async with gate:
                await self._write_chunk(chunk, totals)

        await asyncio.gather(*(one(c) for c in chunks))
        return totals

    async def _write_chunk(self, pending: list[BulkItem], totals: BulkTotals) -> None:
        backoff = self._backoff()
        while pending:
            body = bulk_body(pending)
            started = time.perf_counter()
            answer: dict[str, Any] = await self._retrying(
                "bulk",
                lambda body=body: self.backend.perform(search.bulk(body)),  # type: ignore[misc]
            )
            outcome = classify_bulk(answer, pending)
            chunk = BulkTotals(
                stored=outcome.count(ItemResult.STORED),
                duplicates=outcome.count(ItemResult.DUPLICATE),
                rejected=outcome.count(ItemResult.REJECTED),
            )
            if self._on_bulk:
                self._on_bulk(time.perf_counter() - started, chunk)
            totals.stored += chunk.stored
            totals.duplicates += chunk.duplicates
            totals.rejected += chunk.rejected
            if chunk.duplicates or chunk.rejected:
                for item, result in zip(pending, outcome.results, strict=True):
                    if result is ItemResult.DUPLICATE:
                        totals.duplicate_ids.add(item.id)
                    elif result is ItemResult.REJECTED:
                        totals.rejected_ids.add(item.id)
            for err in outcome.errors:
                # The server's reason may quote the document: escaped, cut, budgeted.
                self._rejected_log.log(
                    log,
                    logging.ERROR,
                    "event=document_rejected error=%s",
                    printable(err, 300, quote=True),
                )
            retry = outcome.retry_positions()
            pending = [pending[i] for i in retry]
            if pending:
                totals.retries += 1
                log.warning(
                    "event=bulk_partial_retry items=%d delay_s=%.2f",
                    len(pending),
                    backoff.current_s,
                )
                await asyncio.sleep(backoff.next())

    async def refresh_readings(self) -> None:
        """Make written readings visible to the aggregation query."""
        await self._retrying(
            "refresh",
            lambda: self.backend.perform(search.refresh(self.names.readings_pattern)),
        )

    async def compute_windows(self, dirty: DirtyWindows) -> list[WindowAggregate]:
        """Recompute every dirty window from the stored readings.

        Only the ranges that hold dirty windows are asked for, each for its own
        devices (:meth:`DirtyWindows.slices`), at most ``MAX_SLICES_PER_QUERY``
        per request: a late reading adds its own minute, not the history between.
        """
        if not len(dirty):
            return []
        await self.refresh_readings()
        slices = dirty.slices()
        out: list[WindowAggregate] = []
        for i in range(0, len(slices), MAX_SLICES_PER_QUERY):
            part = slices[i : i + MAX_SLICES_PER_QUERY]
            after: dict[str, Any] | None = None
            while True:
                body = slices_query(part, after=after)
                answer: dict[str, Any] = await self._retrying(
                    "aggregate",
                    lambda body=body: self.backend.perform(  # type: ignore[misc]
                        search.search(self.names.readings_pattern, body)
                    ),
                )
                windows, after = parse_windows(answer, dirty.windows)
                out += windows
                if after is None:
                    break
        return out

    async def load_windows(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], WindowAggregate | None]:
        """The stored documents of windows (device, start): None for a window
        with none; a window whose document could not be read or lacks
        ``temp_sum`` (written by an earlier release) is left out."""
        out: dict[tuple[str, int], WindowAggregate | None] = {}
        for i in range(0, len(keys), MGET_MAX_DOCS):
            part = keys[i : i + MGET_MAX_DOCS]
            request = search.mget(
                [(self.names.aggregates_for(s), aggregate_id(d, s)) for d, s in part]
            )
            answer: dict[str, Any] = await self._retrying(
                "load_windows",
                lambda request=request: self.backend.perform(request),  # type: ignore[misc]
            )
            for (device, start), doc in zip(part, answer.get("docs", []), strict=False):
                if doc.get("found"):
                    window = window_from_doc(device, start, doc.get("_source", {}))
                    if window is not None:
                        out[(device, start)] = window
                elif _missing(doc):
                    out[(device, start)] = None
        return out

    def aggregate_items(
        self,
        windows: Sequence[WindowAggregate],
        locations: dict[str, tuple[float, float]] | None = None,
    ) -> list[BulkItem]:
        """Bulk ``index`` items (replace) of window documents."""
        locs = locations or {}
        return [
            BulkItem(
                Action.INDEX,
                self.names.aggregates_for(w.start),
                aggregate_id(w.device_id, w.start),
                aggregate_doc(w, locs.get(w.device_id)),
            )
            for w in windows
        ]

    def alert_item(
        self,
        a: Alert,
        location: tuple[float, float] | None = None,
        *,
        processed_at: int | None = None,
    ) -> BulkItem:
        """Bulk upsert of an alert document (keeps acknowledgement fields)."""
        doc = alert_doc(a, location, processed_at=processed_at)
        return BulkItem(Action.UPDATE, self.names.alerts, a.alert_id, doc)

    async def load_alerts(self, *, since_ms: int, stop: asyncio.Event | None = None) -> list[Alert]:
        """Open alerts, plus alerts changed since ``since_ms`` (processing time).

        Processing time, not event time: a backlog from January processed an
        hour ago must be recognised when it is replayed now. :class:`StoppedError`
        when ``stop`` is set while the server is down.
        """
        docs = await self._load_recent(self.names.alerts, "alert_id", since_ms, stop)
        return [alert_from_doc(d) for d in docs]

    async def load_last_heard(
        self, *, since_ms: int, stop: asyncio.Event | None = None, page: int = 10_000
    ) -> list[tuple[str, str, int]]:
        """(device_id, site, event time of its last reading) of every device
        with a one-minute window starting at or after ``since_ms``, from the
        aggregates indices (a composite aggregation, ``page`` devices a request)."""
        pattern = self.names.aggregates_pattern
        await self._retrying(
            "refresh_agg1m", lambda: self.backend.perform(search.refresh(pattern)), stop
        )
        newest: dict[str, tuple[int, str]] = {}
        after: dict[str, Any] | None = None
        while True:
            body = last_heard_query(since_ms, after=after, size=page)
            answer: dict[str, Any] = await self._retrying(
                "load_last_heard",
                lambda body=body: self.backend.perform(  # type: ignore[misc]
                    search.search(pattern, body)
                ),
                stop,
            )
            agg = answer.get("aggregations", {}).get("d", {})
            buckets = agg.get("buckets", [])
            for b in buckets:
                device, site = b["key"]["device_id"], b["key"]["site"]
                ts = b["last"]["value"]
                if ts is not None and (device not in newest or ts > newest[device][0]):
                    newest[device] = (int(ts), site)
            after = agg.get("after_key")
            if not buckets or after is None:
                break
        return [(device, site, ts) for device, (ts, site) in newest.items()]

    def incident_item(self, change: IncidentChange, *, processed_at: int) -> BulkItem:
        """Bulk ``index`` (replace) of an incident's document with its latest change."""
        doc = incident_doc(change, processed_at=processed_at)
        return BulkItem(Action.INDEX, self.names.incidents, change.incident.incident_id, doc)

    async def load_incidents(
        self, *, since_ms: int, stop: asyncio.Event | None = None
    ) -> list[IncidentChange]:
        """The latest change of open incidents, and of incidents changed since
        ``since_ms`` (processing time); a document that breaks the contract is
        logged and skipped."""
        out: list[IncidentChange] = []
        for doc in await self._load_recent(self.names.incidents, "incident_id", since_ms, stop):
            try:
                out.append(incident_from_doc(doc))
            except ContractError as exc:
                log.warning("event=incident_doc_invalid error=%s", printable(str(exc), 300))
        return out

    async def _load_recent(
        self, index: str, sort_field: str, since_ms: int, stop: asyncio.Event | None
    ) -> list[dict[str, Any]]:
        """Sources of the open documents of ``index`` and of those processed since ``since_ms``."""
        what = index.removeprefix(self.names.prefix)  # alerts, incidents
        await self._retrying(
            f"refresh_{what}",
            lambda: self.backend.perform(search.refresh(index)),
            stop,
        )
        out: list[dict[str, Any]] = []
        search_after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": 1000,
                "query": {
                    "bool": {
                        "should": [
                            {"term": {"status": "open"}},
                            {"range": {"processed_at": {"gte": since_ms}}},
                        ],
                        "minimum_should_match": 1,
                    }
                },
                "sort": [{sort_field: "asc"}],
            }
            if search_after is not None:
                body["search_after"] = search_after
            answer: dict[str, Any] = await self._retrying(
                f"load_{what}",
                lambda body=body: self.backend.perform(  # type: ignore[misc]
                    search.search(index, body)
                ),
                stop,
            )
            hits = answer.get("hits", {}).get("hits", [])
            out += [h["_source"] for h in hits]
            if len(hits) < 1000:
                return out
            search_after = hits[-1]["sort"]

    async def acknowledge(self, alert_id: str, *, by: str, now_ms: int) -> dict[str, Any]:
        """Mark an alert acknowledged; returns the updated document."""
        await self.backend.perform(
            search.update_doc(
                self.names.alerts,
                alert_id,
                {"acknowledged": True, "acknowledged_at": now_ms, "acknowledged_by": by},
            )
        )
        got: dict[str, Any] = await self.backend.perform(
            search.get_doc(self.names.alerts, alert_id)
        )
        source: dict[str, Any] = got["_source"]
        return source

    async def delete_expired(self, *, now_ms: int, retention_days: int) -> list[str]:
        """Delete monthly indices past retention: the manual tool behind
        ``thermowatch processor retention``, for clusters without ILM/ISM (the
        processor installs a lifecycle policy where the cluster has one)."""
        from stagekit.search.indices import AGGREGATES, READINGS, expired_indices

        existing: list[str] = []
        for spec in (READINGS, AGGREGATES):
            rows = await self.backend.perform(search.cat_indices(self.names.pattern(spec)))
            existing += [row["index"] for row in rows]
        doomed = expired_indices(existing, self.names, now_ms=now_ms, retention_days=retention_days)
        for name in doomed:
            await self.backend.perform(search.delete_index(name))
            log.info("event=index_deleted index=%s retention_days=%d", name, retention_days)
        return doomed

    async def close(self) -> None:
        """Close the backend's connections (idempotent)."""
        await self.backend.close()

    async def retention_support(self) -> str:
        """``ilm`` or ``ism`` when the cluster can delete old data by itself, else ``none``."""
        return await lifecycle.probe(self._caller(None), self.backend.name)


def _missing(answer: Mapping[str, Any]) -> bool:
    """Whether one answer of a multi-get says there is no such document."""
    error = answer.get("error")
    if error is None:
        return answer.get("found") is False
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind == "index_not_found_exception"


def _already_exists(exc: SearchError) -> bool:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", {})
        if isinstance(err, dict) and err.get("type") == "resource_already_exists_exception":
            return True
    return exc.status == 400 and "already_exists" in str(exc)
