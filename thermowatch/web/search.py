"""Search-server adapter of the web view: recent readings and open alerts.

Reads what the processor writes (index names from
:class:`cloud_processor.schema.IndexNames`) through the processor's own search
port, so OpenSearch and Elasticsearch both work. Queries are built and answers
read by pure functions; :class:`SearchSource` only runs them. Nothing is
refreshed from here: the view shows what is searchable, and Kafka brings what
is newer.

>>> q = readings_query(now_ms=3_600_000, lookback_ms=600_000, max_devices=10, points=5)
>>> q["query"]["range"]["@timestamp"]["gte"], q["aggs"]["devices"]["terms"]["size"]
(3000000, 10)
>>> alerts_query(50)["query"]
{'term': {'status': 'open'}}
"""

from __future__ import annotations

from typing import Any

from cloud_processor import search
from cloud_processor.schema import IndexNames
from cloud_processor.search import SearchBackend
from thermowatch.web.config import SearchSettings

__all__ = ["SearchSource", "alerts_query", "parse_readings", "readings_query"]

_READING_FIELDS = ["@timestamp", "device_id", "site", "seq", "temp_c", "quality"]


def readings_query(
    *, now_ms: int, lookback_ms: int, max_devices: int, points: int
) -> dict[str, Any]:
    """The newest ``points`` readings of each device seen within the lookback."""
    return {
        "size": 0,
        "query": {"range": {"@timestamp": {"gte": now_ms - lookback_ms}}},
        "aggs": {
            "devices": {
                "terms": {"field": "device_id", "size": max_devices},
                "aggs": {
                    "latest": {
                        "top_hits": {
                            "size": points,
                            "sort": [{"@timestamp": {"order": "desc"}}],
                            "_source": {"includes": _READING_FIELDS},
                        }
                    }
                },
            }
        },
    }


def parse_readings(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Reading documents out of a :func:`readings_query` answer.

    >>> parse_readings({"aggregations": {"devices": {"buckets": [
    ...     {"key": "d", "latest": {"hits": {"hits": [{"_source": {"seq": 2}}]}}}]}}})
    [{'seq': 2}]
    >>> parse_readings({"hits": {"hits": []}})   # no index yet
    []
    """
    buckets = answer.get("aggregations", {}).get("devices", {}).get("buckets", [])
    return [
        hit["_source"]
        for bucket in buckets
        for hit in bucket.get("latest", {}).get("hits", {}).get("hits", [])
    ]


def alerts_query(max_alerts: int) -> dict[str, Any]:
    """Open alerts, newest first."""
    return {
        "size": max_alerts,
        "query": {"term": {"status": "open"}},
        "sort": [{"opened_at": {"order": "desc"}}],
    }


class SearchSource:
    """Runs the view's two queries; ``await close()`` when done."""

    def __init__(self, settings: SearchSettings, *, points: int, backend: SearchBackend) -> None:
        self._settings = settings
        self._points = points
        self._names = IndexNames(settings.index_prefix)
        self._backend = backend

    async def recent_readings(self, now_ms: int) -> list[dict[str, Any]]:
        """The newest readings of every recently seen device (documents)."""
        s = self._settings
        body = readings_query(
            now_ms=now_ms,
            lookback_ms=int(s.lookback_s * 1000),
            max_devices=s.max_devices,
            points=self._points,
        )
        answer = await self._backend.perform(search.search(self._names.readings_pattern, body))
        return parse_readings(answer)

    async def open_alerts(self) -> list[dict[str, Any]]:
        """Open alert documents."""
        answer = await self._backend.perform(
            search.search(self._names.alerts, alerts_query(self._settings.max_alerts))
        )
        return [h["_source"] for h in answer.get("hits", {}).get("hits", [])]

    async def close(self) -> None:
        """Release the connections (idempotent)."""
        await self._backend.close()


def make_backend(settings: SearchSettings) -> SearchBackend:
    """The processor's search adapter for these settings."""
    from cloud_processor.app import make_backend as processor_backend
    from cloud_processor.config import SearchSettings as ProcessorSearch

    return processor_backend(
        ProcessorSearch(
            backend=settings.backend,
            url=settings.url,
            username=settings.username,
            password=settings.password,
            api_key=settings.api_key,
            verify_certs=settings.verify_certs,
            timeout_s=settings.timeout_s,
        )
    )
