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
>>> readings_count_query(["d2", "d1"])
{'query': {'terms': {'device_id': ['d1', 'd2']}}}
>>> ids_query(["d1:7", "d2:3"])
{'size': 2, '_source': False, 'query': {'ids': {'values': ['d1:7', 'd2:3']}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "alerts_query",
    "device_alerts_query",
    "devices_filter",
    "ids_query",
    "open_alerts_query",
    "parse_readings",
    "parse_stored_pairs",
    "readings_count_query",
    "readings_query",
    "stored_pairs_query",
]

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


def devices_filter(devices: Iterable[str]) -> dict[str, Any]:
    """The filter on ``device_id`` every fleet query starts from (sorted, no repeats).

    >>> devices_filter(["b", "a", "b"])
    {'terms': {'device_id': ['a', 'b']}}
    """
    return {"terms": {"device_id": sorted(set(devices))}}


def readings_count_query(devices: Iterable[str], *, min_seq: int | None = None) -> dict[str, Any]:
    """``_count`` body: readings of ``devices`` (with ``seq >= min_seq`` if given).

    >>> readings_count_query(["d"], min_seq=900)["query"]["bool"]["filter"][1]
    {'range': {'seq': {'gte': 900}}}
    """
    if min_seq is None:
        return {"query": devices_filter(devices)}
    return {
        "query": {
            "bool": {"filter": [devices_filter(devices), {"range": {"seq": {"gte": min_seq}}}]}
        }
    }


def stored_pairs_query(
    devices: Iterable[str], *, page: int, after: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One page of documents per ``(device_id, seq)`` of ``devices`` (a composite aggregation).

    Accounting's view of what is stored: a ``doc_count`` above 1 means stored
    twice. Page on with the ``after`` key :func:`parse_stored_pairs` returns.

    >>> q = stored_pairs_query(["d"], page=2, after={"device_id": "d", "seq": 7})
    >>> q["size"], q["aggs"]["pairs"]["composite"]["after"]
    (0, {'device_id': 'd', 'seq': 7})
    """
    composite: dict[str, Any] = {
        "size": page,
        "sources": [
            {"device_id": {"terms": {"field": "device_id"}}},
            {"seq": {"terms": {"field": "seq"}}},
        ],
    }
    if after is not None:
        composite["after"] = dict(after)
    return {
        "size": 0,
        "query": devices_filter(devices),
        "aggs": {"pairs": {"composite": composite}},
    }


def parse_stored_pairs(
    answer: Mapping[str, Any],
) -> tuple[dict[tuple[str, int], int], dict[str, Any] | None]:
    """Documents per ``(device_id, seq)`` in one :func:`stored_pairs_query` answer, and
    the ``after`` key of the next page (None: this was the last page).

    >>> parse_stored_pairs({"aggregations": {"pairs": {"after_key": {"device_id": "d", "seq": 1},
    ...     "buckets": [{"key": {"device_id": "d", "seq": 1}, "doc_count": 2}]}}})
    ({('d', 1): 2}, {'device_id': 'd', 'seq': 1})
    >>> parse_stored_pairs({"hits": {"hits": []}})   # no index yet
    ({}, None)
    """
    agg = answer.get("aggregations", {}).get("pairs", {})
    buckets = agg.get("buckets", [])
    pairs: dict[tuple[str, int], int] = {}
    for b in buckets:
        key = (str(b["key"]["device_id"]), int(b["key"]["seq"]))
        pairs[key] = pairs.get(key, 0) + int(b["doc_count"])
    after = agg.get("after_key")
    return pairs, (dict(after) if buckets and after is not None else None)


def device_alerts_query(devices: Iterable[str], *, size: int = 10_000) -> dict[str, Any]:
    """Every alert document of ``devices`` (open or resolved), up to ``size``.

    >>> device_alerts_query(["d"], size=5)
    {'size': 5, 'query': {'terms': {'device_id': ['d']}}}
    """
    return {"size": size, "query": devices_filter(devices)}


def open_alerts_query(
    devices: Iterable[str], *, since_ms: int, until_ms: int | None = None, limit: int = 12
) -> dict[str, Any]:
    """Open alerts of ``devices`` opened (event time) in ``since_ms..until_ms``, newest first.

    >>> q = open_alerts_query(["d"], since_ms=5, until_ms=9, limit=3)
    >>> q["size"], q["query"]["bool"]["filter"][2]
    (3, {'range': {'opened_at': {'gte': 5, 'lt': 9}}})
    """
    opened: dict[str, int] = {"gte": since_ms}
    if until_ms is not None:
        opened["lt"] = until_ms
    return {
        "size": limit,
        "sort": [{"opened_at": "desc"}],
        "query": {
            "bool": {
                "filter": [
                    devices_filter(devices),
                    {"term": {"status": "open"}},
                    {"range": {"opened_at": opened}},
                ]
            }
        },
    }


def ids_query(ids: Sequence[str]) -> dict[str, Any]:
    """Which of the documents ``ids`` (``_id``) are searchable, without their source."""
    return {"size": len(ids), "_source": False, "query": {"ids": {"values": list(ids)}}}
