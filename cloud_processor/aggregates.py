"""One-minute tumbling aggregates per device, recomputed from stored readings (pure).

Why recompute instead of folding readings in memory: a window is rebuilt from
what the readings indices hold, so it is exact whatever happened upstream --
a reading redelivered after a crash is one document (``_id`` dedupe) and
counts once; a late reading (minutes or days late) marks its window dirty and
the window is rebuilt with it folded in; a processor restart loses no partial
window. The processor collects the windows touched since the last commit
(:class:`DirtyWindows`), and before committing Kafka offsets it refreshes the
readings indices, aggregates only the time ranges that hold dirty windows
(:meth:`DirtyWindows.slices`, :func:`slices_query`, at most
:data:`MAX_SLICES_PER_QUERY` ranges per request) and writes the resulting
documents (:func:`parse_windows`) with a deterministic ``_id``
``device_id:window_start``.

>>> window_start(1_767_225_659_999), window_start(1_767_225_660_000)
(1767225600000, 1767225660000)
>>> dirty = DirtyWindows()
>>> dirty.add("d1", "s1", 1_767_225_600_500)
>>> dirty.add("d1", "s1", 1_767_225_601_000)
>>> sorted(dirty.keys())
[('d1', 1767225600000)]

A flush asks only for the stretches of time that hold dirty windows, each for
the devices that have one there (:meth:`DirtyWindows.slices`): a reading a
year late costs one more one-minute range of its own device, never a year of
every device's history.

>>> dirty.add("d2", "s1", 1_767_225_600_500)
>>> dirty.add("d1", "s1", 1_735_689_600_000)       # a year earlier
>>> [(s.devices, s.start, s.end) for s in dirty.slices()]
[(('d1',), 1735689600000, 1735689660000), (('d1', 'd2'), 1767225600000, 1767225660000)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "JOIN_GAP_MS",
    "MAX_SLICES_PER_QUERY",
    "WINDOW_MS",
    "DirtyWindows",
    "Slice",
    "WindowAggregate",
    "aggregate_doc",
    "aggregate_id",
    "last_heard_query",
    "parse_windows",
    "slices_query",
    "window_from_doc",
    "window_start",
]

WINDOW_MS: Final = 60_000
#: Dirty windows closer than this (in event time) are recomputed by one range
#: of the query: the empty minutes in between cost little, a range per window
#: would cost many clauses.
JOIN_GAP_MS: Final = 5 * WINDOW_MS
#: Ranges per aggregation request (OpenSearch refuses more than 1,024 clauses
#: in a query by default; each range is a few).
MAX_SLICES_PER_QUERY: Final = 200


def window_start(ts_ms: int) -> int:
    """Start of the one-minute window holding ``ts_ms``."""
    return ts_ms - ts_ms % WINDOW_MS


@dataclass(slots=True)
class DirtyWindows:
    """Windows touched by readings since the last flush: (device_id, start) -> site."""

    windows: dict[tuple[str, int], str] = field(default_factory=dict)

    def add(self, device_id: str, site: str, ts_ms: int) -> None:
        """Mark the window of a reading for recomputation."""
        self.windows[(device_id, window_start(ts_ms))] = site

    def keys(self) -> Iterable[tuple[str, int]]:
        """(device_id, window_start) pairs."""
        return self.windows.keys()

    def __len__(self) -> int:
        return len(self.windows)

    def clear(self) -> None:
        """Forget everything (after a successful flush)."""
        self.windows.clear()

    def slices(self, join_gap_ms: int = JOIN_GAP_MS) -> list[Slice]:
        """The event-time ranges holding dirty windows, each with the devices
        that have a dirty window in it, oldest first.

        Windows less than ``join_gap_ms`` apart share a range; so the cost of a
        flush follows the dirty windows, not the distance between the oldest
        and the newest of them.
        """
        out: list[Slice] = []
        devices: set[str] = set()
        start = end = 0
        for first, device in sorted((s, d) for d, s in self.windows):
            if devices and first - end >= join_gap_ms:
                out.append(Slice(tuple(sorted(devices)), start, end))
                devices = set()
            if not devices:
                start = first
            devices.add(device)
            end = max(end, first + WINDOW_MS)
        if devices:
            out.append(Slice(tuple(sorted(devices)), start, end))
        return out


@dataclass(frozen=True, slots=True)
class Slice:
    """Devices whose windows in [start, end) are recomputed together."""

    devices: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WindowAggregate:
    """Statistics of one device over one minute (readings with a temperature)."""

    device_id: str
    site: str
    start: int
    count: int
    temp_min: float
    temp_max: float
    temp_mean: float
    temp_last: float
    last_ts: int
    #: Sum of the readings' 32-bit values, unrounded: with ``count`` it lets a
    #: new owner of the partition fold on from the document (see windowfold).
    temp_sum: float
    #: ``seq`` of the newest reading (ties of ``last_ts`` go to the higher seq).
    last_seq: int


def aggregate_id(device_id: str, start: int) -> str:
    """Deterministic ``_id`` of a window document.

    >>> aggregate_id("s1-d01", 1_767_225_600_000)
    's1-d01:1767225600000'
    """
    return f"{device_id}:{start}"


def aggregate_doc(
    w: WindowAggregate, location: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The stored document of a window (fields of :data:`schema.AGGREGATES`)."""
    doc: dict[str, Any] = {
        "@timestamp": w.start,
        "window_end": w.start + WINDOW_MS,
        "device_id": w.device_id,
        "site": w.site,
        "temp_min": w.temp_min,
        "temp_max": w.temp_max,
        "temp_mean": w.temp_mean,
        "temp_last": w.temp_last,
        "last_ts": w.last_ts,
        "count": w.count,
        "temp_sum": w.temp_sum,
        "last_seq": w.last_seq,
    }
    if location is not None:
        doc["location"] = {"lat": location[0], "lon": location[1]}
    return doc


def window_from_doc(
    device_id: str, start: int, source: Mapping[str, Any]
) -> WindowAggregate | None:
    """The window a stored document describes; None if it lacks what folding on
    needs (``temp_sum``, ``last_seq``: a document written by a release before them).

    >>> doc = aggregate_doc(WindowAggregate("d1", "s1", 60_000, 2, 1.0, 3.0, 2.0, 3.0,
    ...                                     61_000, temp_sum=4.0, last_seq=7))
    >>> window_from_doc("d1", 60_000, doc) == WindowAggregate(
    ...     "d1", "s1", 60_000, 2, 1.0, 3.0, 2.0, 3.0, 61_000, temp_sum=4.0, last_seq=7)
    True
    >>> window_from_doc("d1", 60_000, {k: v for k, v in doc.items() if k != "temp_sum"})
    """
    try:
        return WindowAggregate(
            device_id=device_id,
            site=str(source["site"]),
            start=start,
            count=int(source["count"]),
            temp_min=float(source["temp_min"]),
            temp_max=float(source["temp_max"]),
            temp_mean=float(source["temp_mean"]),
            temp_last=float(source["temp_last"]),
            last_ts=int(source["last_ts"]),
            temp_sum=float(source["temp_sum"]),
            last_seq=int(source["last_seq"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def last_heard_query(
    since_ms: int, *, after: Mapping[str, Any] | None = None, size: int = 10_000
) -> dict[str, Any]:
    """Per device (and site), the newest ``last_ts`` of its windows starting at
    or after ``since_ms``: a page of a composite aggregation over the
    aggregates indices (``after``: the previous page's ``after_key``).

    >>> q = last_heard_query(60_000)
    >>> q["query"]["range"]["@timestamp"]["gte"], q["aggs"]["d"]["aggs"]["last"]
    (60000, {'max': {'field': 'last_ts'}})
    """
    composite: dict[str, Any] = {
        "size": size,
        "sources": [
            {"device_id": {"terms": {"field": "device_id"}}},
            {"site": {"terms": {"field": "site"}}},
        ],
    }
    if after is not None:
        composite["after"] = dict(after)
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {"range": {"@timestamp": {"gte": since_ms, "format": "epoch_millis"}}},
        "aggs": {"d": {"composite": composite, "aggs": {"last": {"max": {"field": "last_ts"}}}}},
    }


def slices_query(
    slices: Sequence[Slice], *, after: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregation over the readings of each slice's devices in its range, per
    device and minute.

    Only ``ok`` readings count (a CRC error carries no temperature). The
    composite aggregation pages through any number of windows.
    """
    composite: dict[str, Any] = {
        "size": 1000,
        "sources": [
            {"device_id": {"terms": {"field": "device_id"}}},
            {
                "window": {
                    "date_histogram": {"field": "@timestamp", "fixed_interval": "1m"},
                }
            },
        ],
    }
    if after is not None:
        composite["after"] = dict(after)
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {
            "bool": {
                "filter": [{"term": {"quality": "ok"}}],
                "should": [_slice_clause(s) for s in slices],
                "minimum_should_match": 1,
            }
        },
        "aggs": {
            "w": {
                "composite": composite,
                "aggs": {
                    "stats": {"stats": {"field": "temp_c"}},
                    "last": {
                        "top_hits": {
                            "size": 1,
                            "sort": [{"@timestamp": "desc"}, {"seq": "desc"}],
                            "_source": {"includes": ["temp_c", "@timestamp", "site", "seq"]},
                        }
                    },
                },
            }
        },
    }


def _slice_clause(s: Slice) -> dict[str, Any]:
    return {
        "bool": {
            "filter": [
                {"terms": {"device_id": list(s.devices)}},
                {"range": {"@timestamp": {"gte": s.start, "lt": s.end, "format": "epoch_millis"}}},
            ]
        }
    }


def _r(value: Any) -> float:
    """Round away float32 noise: ``float`` fields aggregate as 32-bit values and
    DS18B20 steps are 1/16 °C, so four decimals keep every real digit.

    >>> _r(21.299999237060547)
    21.3
    """
    return round(float(value), 4)


def parse_windows(
    response: Mapping[str, Any], wanted: Mapping[tuple[str, int], str]
) -> tuple[list[WindowAggregate], dict[str, Any] | None]:
    """Windows of an aggregation answer that are in ``wanted``, and the next page key.

    >>> answer = {"aggregations": {"w": {"buckets": [
    ...     {"key": {"device_id": "d1", "window": 60000}, "doc_count": 2,
    ...      "stats": {"count": 2, "min": 1.0, "max": 3.0, "avg": 2.0, "sum": 4.0},
    ...      "last": {"hits": {"hits": [{"_source": {"temp_c": 3.0, "seq": 7,
    ...                                               "@timestamp": 61000}}]}}}]}}}
    >>> windows, after = parse_windows(answer, {("d1", 60000): "s1"})
    >>> windows[0].temp_mean, windows[0].temp_last, windows[0].site, after
    (2.0, 3.0, 's1', None)
    """
    agg = response.get("aggregations", {}).get("w", {})
    out: list[WindowAggregate] = []
    for b in agg.get("buckets", []):
        device = b["key"]["device_id"]
        start = int(b["key"]["window"])
        site = wanted.get((device, start))
        stats = b["stats"]
        if site is None or not stats.get("count"):
            continue
        last = b["last"]["hits"]["hits"][0]["_source"]
        out.append(
            WindowAggregate(
                device_id=device,
                site=site,
                start=start,
                count=int(stats["count"]),
                temp_min=_r(stats["min"]),
                temp_max=_r(stats["max"]),
                temp_mean=_r(stats["avg"]),
                temp_last=float(last["temp_c"]),
                last_ts=int(last["@timestamp"]),
                temp_sum=float(stats["sum"]),
                last_seq=int(last["seq"]),
            )
        )
    after = agg.get("after_key")
    if after is not None and len(agg.get("buckets", [])) == 0:
        after = None
    return out, after
