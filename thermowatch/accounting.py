"""Exact accounting: was every reading the edge produced stored exactly once?

The promise of the pipeline is checked here, from what is really stored, not
from anybody's counters. Three inputs:

* **allocated**: the seqs each device's outbox handed out (``0..next_seq-1``,
  read from the agents' SQLite outboxes after they stopped);
* **stored**: how many documents the search server holds per ``(device, seq)``
  (a composite aggregation over the readings indices);
* **gaps**: the ``Gap`` messages the edge published (seqs it had to drop and
  said so), read back from the Kafka telemetry topic.

Then every allocated seq is exactly one of *stored* or *covered* (by a Gap)
or *lost*, and every stored copy beyond the first is *duplicated*. The pure
core is :func:`account`; the adapters below it only fetch the three inputs.

>>> acc = account(
...     {"d1": range(5), "d2": range(3)},
...     {("d1", 0): 1, ("d1", 1): 2, ("d1", 3): 1, ("d2", 0): 1, ("d2", 1): 1, ("d2", 2): 1},
...     [GapRange("d1", 4, 4)],
... )
>>> acc.sent, acc.stored, acc.lost, acc.duplicated, acc.covered
(8, 6, 1, 1, 1)
>>> acc.lost_examples, acc.ok
((('d1', 2),), False)

Alerts are scored the same way, from the alerts index: :func:`score_alerts`
matches the injected incidents (ground truth) with the alerts that opened on
the same device while the incident was on (plus a grace period).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Accounting",
    "AlertDoc",
    "AlertIntegrity",
    "AlertScore",
    "GapRange",
    "Incident",
    "PublishedChange",
    "account",
    "alert_integrity",
    "allocated_from_outboxes",
    "fetch_alert_changes",
    "fetch_alerts",
    "fetch_gaps",
    "fetch_reading_keys",
    "fetch_stored",
    "parse_alert_changes",
    "pending_in_outboxes",
    "percentiles",
    "read_records",
    "read_topic",
    "score_alerts",
    "topic_partitions",
]

#: How many lost / duplicated (device, seq) pairs a report names.
EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class GapRange:
    """Seqs ``first_seq..last_seq`` (inclusive) the edge of ``device_id`` declared dropped."""

    device_id: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Accounting:
    """The verdict: counts over allocated seqs, plus a few examples of each defect."""

    sent: int
    #: Allocated (device, seq) pairs with at least one stored document.
    stored: int
    #: Allocated, not stored, not covered by a Gap: a broken promise.
    lost: int
    #: Stored copies beyond the first (a broken promise too).
    duplicated: int
    #: Allocated, not stored, covered by a Gap: declared losses (outbox bounds).
    covered: int
    #: Stored pairs that no outbox allocated (foreign traffic or a seq bug).
    unexpected: int
    #: Seqs covered by a Gap although they were stored, or covered by two Gaps.
    gap_conflicts: int
    lost_examples: tuple[tuple[str, int], ...] = ()
    duplicated_examples: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing stored twice, and the Gaps tell the truth."""
        return self.lost == 0 and self.duplicated == 0 and self.gap_conflicts == 0


def account(
    allocated: Mapping[str, Iterable[int]],
    stored: Mapping[tuple[str, int], int],
    gaps: Iterable[GapRange] = (),
) -> Accounting:
    """Compare what the edge allocated with what is stored and what Gaps cover.

    ``allocated`` maps a device to its seqs (usually ``range(next_seq)``);
    ``stored`` maps ``(device, seq)`` to its number of documents. Seqs of
    devices not in ``allocated`` count as ``unexpected`` and nothing else.

    >>> account({"d": range(3)}, {("d", 0): 1, ("d", 1): 1, ("d", 2): 1}).ok
    True
    >>> a = account({"d": range(4)}, {("d", 0): 1, ("x", 9): 1}, [GapRange("d", 1, 3)])
    >>> a.lost, a.covered, a.unexpected, a.ok
    (0, 3, 1, True)
    >>> account({"d": range(2)}, {("d", 0): 1, ("d", 1): 1}, [GapRange("d", 1, 1)]).gap_conflicts
    1
    """
    covered_by: dict[tuple[str, int], int] = {}
    for g in gaps:
        for seq in range(g.first_seq, g.last_seq + 1):
            key = (g.device_id, seq)
            covered_by[key] = covered_by.get(key, 0) + 1
    sent = stored_n = lost = covered = conflicts = 0
    lost_ex: list[tuple[str, int]] = []
    expected: set[tuple[str, int]] = set()
    for device, seqs in allocated.items():
        for seq in seqs:
            key = (device, seq)
            expected.add(key)
            sent += 1
            n_gaps = covered_by.get(key, 0)
            if n_gaps > 1:
                conflicts += 1
            if stored.get(key, 0) > 0:
                stored_n += 1
                if n_gaps:
                    conflicts += 1
            elif n_gaps:
                covered += 1
            else:
                lost += 1
                if len(lost_ex) < EXAMPLES:
                    lost_ex.append(key)
    duplicated = unexpected = 0
    dup_ex: list[tuple[str, int]] = []
    for key, count in sorted(stored.items()):
        if key not in expected:
            unexpected += 1
            continue
        if count > 1:
            duplicated += count - 1
            if len(dup_ex) < EXAMPLES:
                dup_ex.append(key)
    return Accounting(
        sent=sent,
        stored=stored_n,
        lost=lost,
        duplicated=duplicated,
        covered=covered,
        unexpected=unexpected,
        gap_conflicts=conflicts,
        lost_examples=tuple(lost_ex),
        duplicated_examples=tuple(dup_ex),
    )


# Alerts -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    """One injected incident (ground truth): on ``device_id`` from ``start_ms`` to ``end_ms``."""

    kind: str
    device_id: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class AlertDoc:
    """The fields of an alerts-index document that scoring needs (times in epoch ms)."""

    alert_id: str
    device_id: str
    rule: str
    #: Event time of the reading (or status) that opened it.
    opened_at: int
    status: str = "open"
    resolved_at: int | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class PublishedChange:
    """One alert change as the processor published it on the alerts topic."""

    alert_id: str
    device_id: str
    rule: str
    #: ``opened``, ``updated`` or ``resolved``.
    change: str
    version: int
    #: Kafka record time (processing time of the publication).
    published_ms: int = 0


@dataclass(frozen=True, slots=True)
class AlertIntegrity:
    """Were alerts lost or duplicated between the rules, the topic and the index?"""

    #: Alert documents in the index / distinct alert ids published as opened.
    stored: int
    published: int
    #: Two documents of the same (device, rule) active at the same time: one
    #: condition alerted twice (the book keeps one active alert per key).
    overlapping: tuple[tuple[str, str], ...] = ()
    #: (alert_id, change, version) published more than once.
    repeated: tuple[tuple[str, str, int], ...] = ()
    #: Published as opened, with no document in the index (an alert lost).
    missing_documents: tuple[str, ...] = ()
    #: Documents whose opening was never published (a notification lost).
    unpublished: tuple[str, ...] = ()
    #: Documents older than the newest version published for them.
    stale_documents: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (
            self.overlapping
            or self.repeated
            or self.missing_documents
            or self.unpublished
            or self.stale_documents
        )


def alert_integrity(
    alerts: Iterable[AlertDoc], changes: Iterable[PublishedChange]
) -> AlertIntegrity:
    """Cross-check the alerts index with the changes published on the alerts topic.

    Every alert published as opened has exactly one document, at the newest
    published version; every document was published as opened; no change is
    published twice; and no two alerts of the same (device, rule) are active
    at the same time (which is what a replay that re-opens an alert under a
    new id would produce).

    >>> docs = [AlertDoc("d.t.10", "d", "t", 10, "resolved", 20, 2),
    ...         AlertDoc("d.t.15", "d", "t", 15, "open", None, 1),
    ...         AlertDoc("e.t.5", "e", "t", 5, "open", None, 1)]
    >>> pub = [PublishedChange("d.t.10", "d", "t", "opened", 1),
    ...        PublishedChange("d.t.10", "d", "t", "resolved", 2),
    ...        PublishedChange("d.t.15", "d", "t", "opened", 1),
    ...        PublishedChange("d.t.15", "d", "t", "opened", 1),
    ...        PublishedChange("x.t.1", "x", "t", "opened", 1)]
    >>> i = alert_integrity(docs, pub)
    >>> i.overlapping, i.repeated, i.missing_documents, i.unpublished, i.ok
    ((('d.t.10', 'd.t.15'),), (('d.t.15', 'opened', 1),), ('x.t.1',), ('e.t.5',), False)
    >>> alert_integrity(docs[:1], pub[:2]).ok
    True
    """
    docs = {a.alert_id: a for a in alerts}
    changes = list(changes)
    seen: dict[tuple[str, str, int], int] = {}
    newest: dict[str, int] = {}
    opened: set[str] = set()
    for c in changes:
        key = (c.alert_id, c.change, c.version)
        seen[key] = seen.get(key, 0) + 1
        newest[c.alert_id] = max(c.version, newest.get(c.alert_id, 0))
        if c.change == "opened":
            opened.add(c.alert_id)
    overlapping: list[tuple[str, str]] = []
    by_key: dict[tuple[str, str], list[AlertDoc]] = {}
    for a in docs.values():
        by_key.setdefault((a.device_id, a.rule), []).append(a)
    for group in by_key.values():
        group.sort(key=lambda a: (a.opened_at, a.alert_id))
        for prev, nxt in itertools.pairwise(group):
            # Resolving and re-opening on the same reading is a new condition.
            if prev.resolved_at is None or prev.resolved_at > nxt.opened_at:
                overlapping.append((prev.alert_id, nxt.alert_id))
    return AlertIntegrity(
        stored=len(docs),
        published=len(opened),
        overlapping=tuple(sorted(overlapping)),
        repeated=tuple(sorted(k for k, n in seen.items() if n > 1)),
        missing_documents=tuple(sorted(opened - docs.keys())),
        unpublished=tuple(sorted(docs.keys() - opened)),
        stale_documents=tuple(
            sorted(i for i, a in docs.items() if a.version and a.version < newest.get(i, 0))
        ),
    )


@dataclass(frozen=True, slots=True)
class AlertScore:
    """Incidents alerted or missed, alerts with no incident, latency."""

    injected: int
    alerted: int
    false_alerts: int
    #: Per incident (in input order): latency in ms of its first alert, or None.
    latencies_ms: tuple[int | None, ...]
    #: Per incident: rules of the alerts matched to it.
    rules: tuple[tuple[str, ...], ...]
    false_alert_ids: tuple[str, ...] = field(default=())

    @property
    def missed(self) -> int:
        return self.injected - self.alerted


def score_alerts(
    incidents: Sequence[Incident],
    alerts: Iterable[AlertDoc],
    *,
    grace_ms: int = 60_000,
    since_ms: int = 0,
    until_ms: int | None = None,
    published_ms: Mapping[str, int] | None = None,
) -> AlertScore:
    """Match alerts to incidents by device and time.

    An alert belongs to an incident when it is on the same device and was
    active at some point between the incident's start and its end plus
    ``grace_ms`` (opened before that end, not resolved before the start).
    Alerts opened (event time) outside ``since_ms..until_ms`` are ignored
    (left from before the run, or the fleet's own shutdown at the end); the
    others that match no incident are false alerts.

    Latency of an incident = when its first alert was published minus the
    incident start. ``published_ms`` gives the processing time at which each
    alert was published as opened (the Kafka record time); without it, the
    alert's event time ``opened_at`` is used (a last will carries the time
    its agent connected, so that one needs ``published_ms``).

    >>> inc = [Incident("fire", "d1", 1000, 5000), Incident("stuck", "d2", 1000, 5000)]
    >>> al = [AlertDoc("a", "d1", "rate_of_change", 1800),
    ...       AlertDoc("b", "d1", "threshold_high", 2500),
    ...       AlertDoc("c", "d3", "threshold_high", 3000),
    ...       AlertDoc("z", "d3", "device_offline", 99999),
    ...       AlertDoc("w", "d2", "device_offline", 500, "resolved", 900)]
    >>> s = score_alerts(inc, al, grace_ms=0, until_ms=10_000, published_ms={"a": 2100})
    >>> s.injected, s.alerted, s.missed, s.false_alerts, s.latencies_ms, s.false_alert_ids
    (2, 1, 1, 2, (1100, None), ('w', 'c'))
    >>> s.rules
    (('rate_of_change', 'threshold_high'), ())
    >>> score_alerts([Incident("offline", "d9", 5000, 8000)],
    ...              [AlertDoc("o", "d9", "device_offline", 100, "resolved", 8200)],
    ...              published_ms={"o": 5400}).latencies_ms
    (400,)
    """
    published = published_ms or {}
    matched: list[list[AlertDoc]] = [[] for _ in incidents]
    false_ids: list[str] = []
    for a in sorted(alerts, key=lambda a: (a.opened_at, a.alert_id)):
        if a.opened_at < since_ms or (until_ms is not None and a.opened_at >= until_ms):
            continue
        hit = False
        for i, inc in enumerate(incidents):
            if (
                a.device_id == inc.device_id
                and a.opened_at <= inc.end_ms + grace_ms
                and (a.resolved_at is None or a.resolved_at >= inc.start_ms)
            ):
                matched[i].append(a)
                hit = True
        if not hit:
            false_ids.append(a.alert_id)
    latencies = tuple(
        min(published.get(a.alert_id, a.opened_at) for a in m) - inc.start_ms if m else None
        for inc, m in zip(incidents, matched, strict=True)
    )
    return AlertScore(
        injected=len(incidents),
        alerted=sum(1 for m in matched if m),
        false_alerts=len(false_ids),
        latencies_ms=latencies,
        rules=tuple(tuple(sorted({a.rule for a in m})) for m in matched),
        false_alert_ids=tuple(false_ids),
    )


def percentiles(
    values: Iterable[float], qs: Sequence[int] = (50, 95, 99)
) -> dict[str, float | None]:
    """Nearest-rank percentiles (``None`` when there is no value).

    >>> percentiles([10, 20, 30, 40])
    {'p50': 20, 'p95': 40, 'p99': 40}
    >>> percentiles([])
    {'p50': None, 'p95': None, 'p99': None}
    """
    data = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q}"] = data[max(0, math.ceil(q / 100 * len(data)) - 1)] if data else None
    return out


# Adapters: fetch the inputs ---------------------------------------------------------


def allocated_from_outboxes(outboxes: Mapping[str, Path]) -> dict[str, range]:
    """``device -> range(next_seq)`` read from each agent's outbox database.

    Exact for a stopped fleet, and a consistent snapshot of a running one: the
    outbox is in WAL mode and allocates seqs in the same transaction that
    stores their readings, so every seq below the ``next_seq`` read here is
    durably in the outbox (on its way, or already delivered).
    """
    from edge_agent.outbox import read_next_seq

    return {device: range(read_next_seq(path)) for device, path in outboxes.items()}


def pending_in_outboxes(outboxes: Mapping[str, Path]) -> dict[str, set[int]]:
    """``device -> seqs`` still in each outbox: not (yet) acknowledged by the broker.

    Where a missing reading is tells which hop has it: still here means the
    edge has not delivered it (yet); gone means the broker acknowledged it.
    """
    from edge_agent.outbox import read_pending_seqs

    return {device: read_pending_seqs(path) for device, path in outboxes.items()}


def fetch_stored(
    url: str, index_pattern: str, devices: Iterable[str], *, page: int = 2000, timeout: float = 60
) -> dict[tuple[str, int], int]:
    """Documents per ``(device_id, seq)`` in ``index_pattern``, for ``devices``.

    A composite aggregation pages through every pair (after a refresh, so
    nothing acknowledged is missed); ``doc_count`` > 1 means stored twice.
    """
    import requests

    devs = sorted(set(devices))
    out: dict[tuple[str, int], int] = {}
    with requests.Session() as http:
        r = http.post(f"{url}/{index_pattern}/_refresh", timeout=timeout)
        if r.status_code == 404:
            return out
        r.raise_for_status()
        after: dict[str, Any] | None = None
        while True:
            comp: dict[str, Any] = {
                "size": page,
                "sources": [
                    {"device_id": {"terms": {"field": "device_id"}}},
                    {"seq": {"terms": {"field": "seq"}}},
                ],
            }
            if after is not None:
                comp["after"] = after
            body = {
                "size": 0,
                "query": {"terms": {"device_id": devs}},
                "aggs": {"pairs": {"composite": comp}},
            }
            resp = http.post(
                f"{url}/{index_pattern}/_search?ignore_unavailable=true&allow_no_indices=true",
                json=body,
                timeout=timeout,
            )
            resp.raise_for_status()
            agg = resp.json().get("aggregations", {}).get("pairs", {})
            buckets = agg.get("buckets", [])
            for b in buckets:
                key = (str(b["key"]["device_id"]), int(b["key"]["seq"]))
                out[key] = out.get(key, 0) + int(b["doc_count"])
            after = agg.get("after_key")
            if not buckets or after is None:
                return out


def fetch_alerts(
    url: str, index: str, devices: Iterable[str], *, timeout: float = 60
) -> list[AlertDoc]:
    """Every alert document of ``devices`` in the alerts index (one search, up to 10,000)."""
    import requests

    with requests.Session() as http:
        r = http.post(f"{url}/{index}/_refresh", timeout=timeout)
        if r.status_code == 404:
            return []
        resp = http.post(
            f"{url}/{index}/_search",
            json={
                "size": 10_000,
                "query": {"terms": {"device_id": sorted(set(devices))}},
                "_source": [
                    "alert_id",
                    "device_id",
                    "rule",
                    "opened_at",
                    "status",
                    "resolved_at",
                    "version",
                ],
            },
            timeout=timeout,
        )
        resp.raise_for_status()
        hits = resp.json()["hits"]["hits"]
    return [
        AlertDoc(
            alert_id=str(h["_source"]["alert_id"]),
            device_id=str(h["_source"]["device_id"]),
            rule=str(h["_source"]["rule"]),
            opened_at=int(h["_source"]["opened_at"]),
            status=str(h["_source"].get("status", "")),
            resolved_at=_int_or_none(h["_source"].get("resolved_at")),
            version=int(h["_source"].get("version") or 0),
        )
        for h in hits
    ]


def topic_partitions(described: Iterable[Mapping[str, Any]]) -> list[Any]:
    """TopicPartitions of the existing topics in an admin ``describe_topics`` answer.

    >>> topic_partitions([{"error_code": 0, "topic": "t", "partitions": [{"partition": 1}]},
    ...                   {"error_code": 3, "topic": "gone", "partitions": []}])
    [TopicPartition(topic='t', partition=1)]
    """
    from aiokafka import TopicPartition

    return [
        TopicPartition(str(t["topic"]), int(p["partition"]))
        for t in described
        if t.get("error_code", 0) == 0
        for p in sorted(t.get("partitions", []), key=lambda p: int(p["partition"]))
    ]


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value of ``topic`` (see :func:`read_records`)."""
    return [value for value, _ in await read_records(bootstrap, topic)]


async def read_records(bootstrap: str, topic: str) -> list[tuple[bytes, int]]:
    """``(value, timestamp ms)`` of every record of ``topic``, up to the end offsets as of the call.

    No consumer group: nothing is committed, nobody else's position moves.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = topic_partitions(await admin.describe_topics([topic]))
    finally:
        await admin.close()
    values: list[tuple[bytes, int]] = []
    if not tps:
        return values
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                values.extend((r.value, int(r.timestamp)) for r in records if r.value is not None)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return values


def parse_alert_changes(records: Iterable[tuple[bytes, int]]) -> list[PublishedChange]:
    """The alert changes among ``(value, timestamp ms)`` records of the alerts topic.

    >>> parse_alert_changes([(b'{"alert_id": "d.t.5", "device_id": "d", "rule": "t",'
    ...                       b' "change": "opened", "version": 1}', 7), (b"junk", 8)])
    [PublishedChange(alert_id='d.t.5', device_id='d', rule='t', change='opened', version=1, \
published_ms=7)]
    """
    import json

    out: list[PublishedChange] = []
    for value, ts in records:
        try:
            body = json.loads(value)
            out.append(
                PublishedChange(
                    alert_id=str(body["alert_id"]),
                    device_id=str(body["device_id"]),
                    rule=str(body["rule"]),
                    change=str(body["change"]),
                    version=int(body["version"]),
                    published_ms=int(ts),
                )
            )
        except (ValueError, TypeError, KeyError):
            continue
    return out


async def fetch_alert_changes(bootstrap: str, topic: str) -> list[PublishedChange]:
    """Every alert change published on the alerts ``topic`` so far."""
    return parse_alert_changes(await read_records(bootstrap, topic))


async def fetch_reading_keys(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    """Records per ``(device_id, seq)`` of the readings in the Kafka telemetry ``topic``."""
    import json

    out: dict[tuple[str, int], int] = {}
    for value in await read_topic(bootstrap, topic):
        try:
            body = json.loads(value)
            if body.get("type") != "reading":
                continue
            key = (str(body["device_id"]), int(body["seq"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        out[key] = out.get(key, 0) + 1
    return out


def wait_devices_in_topic(
    bootstrap: str, topic: str, devices: Iterable[str], *, timeout_s: float, poll_s: float = 2.0
) -> bool:
    """Poll the Kafka telemetry ``topic`` until every device has a reading there.

    False when ``timeout_s`` passed first. For drivers (tests, experiments),
    not for code running in an event loop.
    """
    import asyncio
    import time

    wanted = set(devices)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = asyncio.run(fetch_reading_keys(bootstrap, topic))
        if {d for d, _ in keys} >= wanted:
            return True
        time.sleep(poll_s)
    return False


def wait_missing_in_topic(
    bootstrap: str,
    topic: str,
    allocated: Mapping[str, Iterable[int]],
    *,
    timeout_s: float,
    poll_s: float,
) -> list[tuple[str, int]]:
    """The allocated ``(device, seq)`` not in the Kafka telemetry ``topic``.

    Polled until none is missing or ``timeout_s`` has passed (the topic is
    read at least once); what is still missing then is returned.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        keys = asyncio.run(fetch_reading_keys(bootstrap, topic))
        missing = [(d, s) for d, seqs in allocated.items() for s in seqs if (d, s) not in keys]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)


async def fetch_gaps(bootstrap: str, topic: str, devices: Iterable[str]) -> list[GapRange]:
    """Every ``Gap`` of ``devices`` in the Kafka telemetry ``topic``."""
    from telemetry_contract import ContractError, Gap, decode

    wanted = set(devices)
    gaps: list[GapRange] = []
    for value in await read_topic(bootstrap, topic):
        if b'"gap"' not in value:
            continue
        try:
            msg = decode(value, now_ms=2**62)
        except ContractError:
            continue
        if isinstance(msg, Gap) and msg.device_id in wanted:
            gaps.append(GapRange(msg.device_id, msg.first_seq, msg.last_seq))
    return gaps
