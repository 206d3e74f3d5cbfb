"""Alert accounting, the pure core: incidents scored, index and topic cross-checked.

:func:`score_alerts` matches the injected incidents (ground truth) with the
alerts that opened on the same device while the incident was on (plus a
grace period); :func:`alert_integrity` checks that the alerts index and the
changes published on the alerts topic tell the same story (nothing lost,
nothing twice). Alert changes are read with the contract
(:func:`telemetry_contract.decode_alert_change`), alert documents by the
search source with :func:`stagekit.search.alerts.alert_from_doc`.

>>> inc = [Incident("fire", "d1", 1000, 5000)]
>>> s = score_alerts(inc, [AlertDoc("d1.threshold_high.1800", "d1", "threshold_high", 1800)])
>>> s.alerted, s.latencies_ms
(1, (800,))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from telemetry_contract import Alert, ChangeKind, ContractError, decode_alert_change

__all__ = [
    "AlertDoc",
    "AlertIntegrity",
    "AlertScore",
    "Incident",
    "PublishedChange",
    "alert_integrity",
    "first_published",
    "parse_alert_changes",
    "score_alerts",
]


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
    severity: str = "warning"

    @classmethod
    def of(cls, alert: Alert) -> AlertDoc:
        """The scoring fields of a contract :class:`~telemetry_contract.Alert`."""
        return cls(
            alert_id=alert.alert_id,
            device_id=alert.device_id,
            rule=alert.rule,
            opened_at=alert.opened_at,
            status=alert.status.value,
            resolved_at=alert.resolved_at,
            version=alert.version,
            severity=alert.severity.value,
        )


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


def parse_alert_changes(records: Iterable[tuple[bytes, int]]) -> list[PublishedChange]:
    """The alert changes among ``(value, timestamp ms)`` records of the alerts topic.

    Decoded with the contract; anything else is skipped. Changes written
    before the contract tagged them (no ``type``/``schema_version``) count too.

    >>> old = (b'{"alert_id": "d.t.5", "device_id": "d", "site": "s", "rule": "t",'
    ...        b' "severity": "warning", "status": "open", "version": 1, "opened_at": 5,'
    ...        b' "updated_at": 5, "change": "opened"}')
    >>> parse_alert_changes([(old, 7), (b"junk", 8)])
    [PublishedChange(alert_id='d.t.5', device_id='d', rule='t', change='opened', version=1, \
published_ms=7)]
    """
    out: list[PublishedChange] = []
    for value, ts in records:
        try:
            change = decode_alert_change(value)
        except ContractError:
            continue
        a = change.alert
        out.append(
            PublishedChange(
                alert_id=a.alert_id,
                device_id=a.device_id,
                rule=a.rule,
                change=change.kind.value,
                version=a.version,
                published_ms=int(ts),
            )
        )
    return out


def first_published(changes: Iterable[PublishedChange]) -> dict[str, int]:
    """When each alert was first published as opened (its earliest record time).

    >>> first_published([PublishedChange("a", "d", "r", "opened", 1, 9),
    ...                  PublishedChange("a", "d", "r", "opened", 1, 4),
    ...                  PublishedChange("b", "d", "r", "resolved", 2, 1)])
    {'a': 4}
    """
    out: dict[str, int] = {}
    for c in changes:
        if c.change == ChangeKind.OPENED:
            out[c.alert_id] = min(c.published_ms, out.get(c.alert_id, c.published_ms))
    return out
