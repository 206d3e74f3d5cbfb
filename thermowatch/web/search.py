"""Search-server adapter of the web view: recent readings, open alerts and incidents.

Reads what the processor writes through the shared search package
(:mod:`stagekit.search`: index names, queries, OpenSearch and Elasticsearch
adapters); :class:`SearchSource` only runs the queries. Nothing is refreshed
from here: the view shows what is searchable, and Kafka brings what is newer.
"""

from __future__ import annotations

from typing import Any, Final

from stagekit.search import IndexNames, SearchBackend
from stagekit.search import api as search
from stagekit.search.queries import alerts_query, parse_readings, readings_query
from thermowatch.web.config import SearchSettings

__all__ = ["RESOLVED_LOOKBACK_MS", "SearchSource", "incidents_query"]

#: Resolved incidents this recent are loaded too (the page's "recently resolved").
RESOLVED_LOOKBACK_MS: Final = 3_600_000


def incidents_query(size: int, *, now_ms: int) -> dict[str, Any]:
    """Open incidents, then those resolved within :data:`RESOLVED_LOOKBACK_MS`, newest first.

    ``unmapped_type``: an index without incidents yet (or none at all: an older
    processor) answers with no hits instead of an error.

    >>> q = incidents_query(10, now_ms=3_600_000)
    >>> q["query"]["bool"]["should"][1]
    {'range': {'resolved_at': {'gte': 0}}}
    """
    return {
        "size": size,
        "query": {
            "bool": {
                "should": [
                    {"term": {"status": "open"}},
                    {"range": {"resolved_at": {"gte": now_ms - RESOLVED_LOOKBACK_MS}}},
                ],
                "minimum_should_match": 1,
            }
        },
        # Open ones first ("open" < "resolved"): many resolved ones never crowd out one open.
        "sort": [
            {"status": {"order": "asc", "unmapped_type": "keyword"}},
            {"updated_at": {"order": "desc", "unmapped_type": "date"}},
        ],
    }


class SearchSource:
    """Runs the view's two queries; ``await close()`` when done."""

    def __init__(self, settings: SearchSettings, *, points: int, backend: SearchBackend) -> None:
        self._settings = settings
        self._points = points
        self._names = IndexNames(settings.index_prefix)
        #: The processor's incidents index (``<index_prefix>incidents``).
        self.incidents_index = self._names.incidents
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

    async def incidents(self, now_ms: int) -> list[dict[str, Any]]:
        """Open and recently resolved incident documents (none from an older processor)."""
        body = incidents_query(self._settings.max_alerts + 50, now_ms=now_ms)
        answer = await self._backend.perform(search.search(self.incidents_index, body))
        return [h["_source"] for h in answer.get("hits", {}).get("hits", [])]

    async def close(self) -> None:
        """Release the connections (idempotent)."""
        await self._backend.close()
