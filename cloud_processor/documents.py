"""Documents, bulk bodies and the meaning of bulk answers (pure).

A reading becomes one document with the deterministic ``_id``
``<device_id>:<seq>`` (seq is per device and never reused), written with
``op_type=create`` into the monthly index of its event time. A redelivered
reading therefore gets a 409 from the search server, which
:func:`classify_bulk` reports as *already stored*, never as a second copy.

>>> from telemetry_contract import Reading
>>> r = Reading(device_id="s1-d01", sensor_id="host", site="s1", seq=7,
...             ts=1_767_225_600_000, temp_c=4.25)
>>> reading_id(r)
's1-d01:7'
>>> reading_doc(r)["temp_c"], reading_doc(r)["@timestamp"]
(4.25, 1767225600000)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from telemetry_contract import Reading

__all__ = [
    "Action",
    "BulkItem",
    "BulkOutcome",
    "ItemResult",
    "bulk_body",
    "classify_bulk",
    "geo",
    "reading_doc",
    "reading_id",
]

_ENC: Final = msgspec.json.Encoder()

#: Item statuses worth another try: too many requests, and server-side trouble.
RETRIABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})


def reading_id(r: Reading) -> str:
    """Deterministic document id of a reading: ``device_id:seq``.

    Device ids cannot contain ``:`` (see the contract's id pattern), so the id
    is unambiguous.
    """
    return f"{r.device_id}:{r.seq}"


def geo(location: tuple[float, float] | None) -> dict[str, float] | None:
    """A ``(lat, lon)`` pair as a geo_point object.

    >>> geo((52.5, 13.4))
    {'lat': 52.5, 'lon': 13.4}
    """
    if location is None:
        return None
    return {"lat": location[0], "lon": location[1]}


def reading_doc(r: Reading, location: tuple[float, float] | None = None) -> dict[str, Any]:
    """The stored document of a reading (fields of :data:`schema.READINGS`).

    Null optional fields are left out rather than stored as null.
    """
    doc: dict[str, Any] = {
        "@timestamp": r.ts,
        "device_id": r.device_id,
        "sensor_id": r.sensor_id,
        "site": r.site,
        "seq": r.seq,
        "quality": r.quality.value,
        "is_anomaly": r.is_anomaly,
        "schema_version": r.schema_version,
    }
    if r.temp_c is not None:
        doc["temp_c"] = r.temp_c
    if r.anomaly_score is not None:
        doc["anomaly_score"] = r.anomaly_score
    if r.detector is not None:
        doc["detector"] = r.detector
    if location is not None:
        doc["location"] = geo(location)
    return doc


class Action(enum.StrEnum):
    """Bulk operation: ``create`` (dedupe by id), ``index`` (replace), ``update``."""

    CREATE = "create"
    INDEX = "index"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One operation of a bulk request."""

    action: Action
    index: str
    id: str
    doc: Mapping[str, Any]


def bulk_body(items: Iterable[BulkItem]) -> bytes:
    """NDJSON body of ``POST _bulk`` (same bytes for OpenSearch and Elasticsearch).

    ``update`` items are sent as upserts of a partial document, so fields
    written by someone else (an acknowledgement) survive.

    >>> bulk_body([BulkItem(Action.CREATE, "i", "d:1", {"a": 1})])
    b'{"create":{"_index":"i","_id":"d:1"}}\\n{"a":1}\\n'
    >>> for line in bulk_body([BulkItem(Action.UPDATE, "i", "x", {"a": 1})]).splitlines():
    ...     print(line.decode())
    {"update":{"_index":"i","_id":"x","retry_on_conflict":3}}
    {"doc":{"a":1},"doc_as_upsert":true}
    """
    parts: list[bytes] = []
    for item in items:
        if item.action is Action.UPDATE:
            # An acknowledgement may update the same alert concurrently.
            meta = {"_index": item.index, "_id": item.id, "retry_on_conflict": 3}
            parts.append(_ENC.encode({"update": meta}))
            parts.append(_ENC.encode({"doc": item.doc, "doc_as_upsert": True}))
            continue
        parts.append(_ENC.encode({item.action.value: {"_index": item.index, "_id": item.id}}))
        parts.append(_ENC.encode(item.doc))
    parts.append(b"")
    return b"\n".join(parts)


class ItemResult(enum.Enum):
    """What happened to one bulk item."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # create met an existing id: already stored
    RETRY = "retry"  # 429 or a server-side failure: send it again
    REJECTED = "rejected"  # the document itself is wrong: retrying cannot help


@dataclass(slots=True)
class BulkOutcome:
    """Per-item results of one bulk answer, in request order."""

    results: list[ItemResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self, what: ItemResult) -> int:
        """How many items ended as ``what``."""
        return sum(1 for r in self.results if r is what)

    def retry_positions(self) -> list[int]:
        """Indexes (in the request) of the items to send again."""
        return [i for i, r in enumerate(self.results) if r is ItemResult.RETRY]


def classify_bulk(response: Mapping[str, Any], sent: Sequence[BulkItem]) -> BulkOutcome:
    """Read a ``_bulk`` answer: stored, already stored (409 on create), retry, rejected.

    >>> items = [BulkItem(Action.CREATE, "i", str(n), {}) for n in range(4)]
    >>> answer = {"errors": True, "items": [
    ...     {"create": {"status": 201}},
    ...     {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
    ...     {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
    ...     {"create": {"status": 400, "error": {"type": "mapper_parsing_exception",
    ...                                          "reason": "bad"}}}]}
    >>> [r.value for r in classify_bulk(answer, items).results]
    ['stored', 'duplicate', 'retry', 'rejected']
    """
    out = BulkOutcome()
    answers = response.get("items", [])
    if len(answers) != len(sent):
        # Should not happen; treat the whole request as failed and resend it.
        out.results = [ItemResult.RETRY] * len(sent)
        out.errors.append(f"bulk answered {len(answers)} items for {len(sent)} sent")
        return out
    for item, answer in zip(sent, answers, strict=True):
        body = next(iter(answer.values()))
        status = int(body.get("status", 500))
        if 200 <= status < 300:
            out.results.append(ItemResult.STORED)
        elif status == 409 and item.action is Action.CREATE:
            out.results.append(ItemResult.DUPLICATE)
        elif status in RETRIABLE_STATUS or status == 409:
            out.results.append(ItemResult.RETRY)
        else:
            out.results.append(ItemResult.REJECTED)
            err = body.get("error", {})
            reason = err.get("reason", "") if isinstance(err, dict) else str(err)
            out.errors.append(f"index={item.index} id={item.id} status={status} error={reason}")
    return out
