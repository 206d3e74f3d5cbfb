"""Queries that read what the processor stores, built and read by pure functions.

Shared by every reader (the web view, the demo, accounting): each builds a
request body or reads an answer, and the caller runs it through its backend
(:func:`stagekit.search.make_backend`) against the index names of
:class:`~stagekit.search.indices.IndexNames`.

>>> q = readings_query(now_ms=3_600_000, lookback_ms=600_000, max_devices=10, points=5)
>>> q["query"]["range"]["@timestamp"]["gte"], q["aggs"]["devices"]["terms"]["size"]
(3000000, 10)
>>> alerts_query(50)["query"]
{'term': {'status': 'open'}}
>>> ids_query(["d1:7", "d2:3"])
{'size': 2, '_source': False, 'query': {'ids': {'values': ['d1:7', 'd2:3']}}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["alerts_query", "ids_query", "parse_readings", "readings_query"]

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


def ids_query(ids: Sequence[str]) -> dict[str, Any]:
    """Which of the documents ``ids`` (``_id``) are searchable, without their source."""
    return {"size": len(ids), "_source": False, "query": {"ids": {"values": list(ids)}}}
