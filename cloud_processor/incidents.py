"""Incidents, not alert piles: one device's alerts (or a site's) grouped into one incident.

:class:`IncidentBook` is pure: it takes the alert changes the processor
published (:class:`~telemetry_contract.AlertChange`, in topic order) and
returns :class:`~telemetry_contract.IncidentChange` records.

- **One incident per device.** The first alert of a device opens an incident
  (id derived from that alert, :func:`~telemetry_contract.incident_id_for`);
  later alerts of the device join it while it is open. Its severity is the
  highest of its active alerts. When the last of them resolves, the incident
  waits ``resolve_grace_s`` (event time) before it resolves: an alert of the
  device that opens meanwhile (a flap) joins it again instead of opening a
  second incident.
- **Site incidents.** When at least ``site_min_devices`` devices, and at least
  ``site_fraction`` of the site's devices, open incidents within
  ``site_window_s`` of each other (a power cut), they fold into one site
  incident: the site incident opens (notified) and the device incidents end
  (``resolved``, message ``folded into <site incident id>``; notified when
  their opening was, so every notified ``opened`` gets its ``resolved``; the
  site incident's ``device_ids`` list them). Later devices of the site join it while it is
  younger than ``site_window_s``.
- **Notifications.** Exactly one when an incident opens, one each time its
  severity rises (``escalated``), one when it resolves; an alert joining at
  the same or a lower severity, or resolving while others stay, is an
  ``updated`` change that is stored, never notified. Alert changes that were
  not notified (late: a backlog) stay silent: an incident of late alerts is
  recorded, and notified (``opened``) only when a live alert change reaches
  it; it resolves silently when nobody heard of it. Informational alerts (an
  announced shutdown) open no incident and join none.

Deterministic under replay. Everything is a function of the alert changes
and their order: incident ids come from the opening alert, versions count the
incident's changes, the grace and the site window are measured in event time
against the highest event time seen (:meth:`apply` expires what is due
before it applies a change), so the same alert changes give the same incident
changes. After a restart the processor's feed re-reads the alerts topic from
its committed offset; :meth:`restore` loads the stored incidents and the
alerts they list, and remembers every alert version already accounted for,
so a change read again is skipped and no (incident_id, version) is emitted
twice. :meth:`expire` is also called with the wall clock, so a quiet fleet's
incidents resolve; that only decides *when* a due resolution is emitted.
"The same order" holds per device (its alert changes are keyed by device:
one partition, in order). The alerts topic has several partitions, and the
feed may interleave them differently after a restart; what depends on other
devices -- the site fold, and the highest event time that ends a grace --
can then differ for changes within ``resolve_grace_s`` / ``site_window_s``
of each other; ids and versions of what was stored are kept either way.

>>> from telemetry_contract import Alert, AlertStatus, ChangeKind, Severity
>>> book = IncidentBook(IncidentSettings(resolve_grace_s=60))
>>> def ch(rule, sev, ts, kind=ChangeKind.OPENED, version=1):
...     status = AlertStatus.RESOLVED if kind is ChangeKind.RESOLVED else AlertStatus.OPEN
...     a = Alert(f"d1.{rule}.1000", "d1", "s1", rule, sev, status, version, 1000, ts)
...     return AlertChange(kind, a)
>>> def show(changes):
...     return [(c.kind.value, c.incident.severity.value, c.notify) for c in changes]
>>> show(book.apply(ch("edge_anomaly", Severity.WARNING, 1000)))
[('opened', 'warning', True)]
>>> show(book.apply(ch("fleet_outlier", Severity.WARNING, 2000)))
[('updated', 'warning', False)]
>>> show(book.apply(ch("threshold_high", Severity.CRITICAL, 3000)))
[('escalated', 'critical', True)]
>>> for rule, sev in (("edge_anomaly", Severity.WARNING), ("fleet_outlier", Severity.WARNING),
...                   ("threshold_high", Severity.CRITICAL)):
...     _ = book.apply(ch(rule, sev, 9000, ChangeKind.RESOLVED, 2))
>>> show(book.expire(69_000))
[('resolved', 'critical', True)]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Final

import msgspec
from msgspec.structs import replace

from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    Incident,
    IncidentChange,
    IncidentChangeKind,
    IncidentScope,
    IncidentStatus,
    Severity,
    incident_id_for,
)
from telemetry_contract.incidents import (
    MAX_INCIDENT_ALERTS,
    MAX_INCIDENT_DEVICES,
    MAX_INCIDENT_RULES,
)

__all__ = ["IncidentBook", "IncidentSettings", "severity_rank"]

_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_BY_RANK: Final = {rank: severity for severity, rank in _RANK.items()}
#: Alert ids of resolved incidents remembered (a change of one read again is stale).
MAX_CLOSED_ALERTS: Final = 100_000


def severity_rank(severity: Severity) -> int:
    """Order of severities: info < warning < critical.

    >>> severity_rank(Severity.CRITICAL) > severity_rank(Severity.WARNING)
    True
    """
    return _RANK[severity]


class IncidentSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How alerts group into incidents (``[incidents]``).

    Incidents are kept by the webhook's feed, which reads the alerts topic
    (:mod:`cloud_processor.feed`), and stored in ``<prefix>incidents``.
    """

    #: Keep incidents (in ``<prefix>incidents``, with no ``webhook.url`` too);
    #: false: none, and the webhook notifies alert changes.
    enabled: bool = True
    #: After its last alert resolves, an incident stays open this long (event
    #: time): an alert of the device opening meanwhile (a flap) joins it.
    resolve_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    #: Device incidents of one site opened within this many seconds fold into
    #: one site incident ...
    site_window_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    #: ... when at least this fraction of the site's devices ...
    site_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    #: ... and at least this many devices have one.
    site_min_devices: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = 3


@dataclass(slots=True)
class _Open:
    """An open incident and what the book knows beyond its document."""

    incident: Incident
    #: alert_id -> its latest state (active and resolved members alike).
    alerts: dict[str, Alert] = field(default_factory=dict)
    #: Event time since which none of its alerts is active (the grace runs).
    idle_since: int | None = None
    #: Highest severity rank it has had: only a rise above it is news (a
    #: severity that drops and comes back is not escalated twice).
    peak: int = 0
    #: Resolved members dropped from ``alerts`` (memory stays bounded while it
    #: is open): how many, their highest severity rank, rules and devices.
    pruned: int = 0
    pruned_rank: int = 0
    pruned_rules: set[str] = field(default_factory=set)
    pruned_devices: dict[str, None] = field(default_factory=dict)

    def prune(self) -> list[str]:
        """Drop the oldest resolved members beyond :data:`MAX_INCIDENT_ALERTS`
        (active ones always stay); return their ids."""
        extra = len(self.alerts) - MAX_INCIDENT_ALERTS
        if extra <= 0:
            return []
        done = [a for a in self.alerts.values() if a.status is not AlertStatus.OPEN]
        done.sort(key=lambda a: (a.updated_at, a.alert_id))
        for a in done[:extra]:
            self.absorb(a)
            del self.alerts[a.alert_id]
        return [a.alert_id for a in done[:extra]]

    def absorb(self, a: Alert | _Open) -> None:
        """Count a dropped alert (or another entry's dropped ones) in the totals."""
        if isinstance(a, _Open):
            self.pruned += a.pruned
            self.pruned_rank = max(self.pruned_rank, a.pruned_rank)
            self.pruned_rules |= a.pruned_rules
            self.pruned_devices.update(a.pruned_devices)
            return
        self.pruned += 1
        self.pruned_rank = max(self.pruned_rank, severity_rank(a.severity))
        self.pruned_rules.add(a.rule)
        self.pruned_devices[a.device_id] = None


class IncidentBook:
    """Open incidents by device and site; alert changes in, incident changes out.

    ``site_size(site)`` says how many devices a site has (the processor knows
    its fleet); without it the book counts the devices it has seen alert.
    """

    def __init__(
        self,
        settings: IncidentSettings | None = None,
        *,
        site_size: Callable[[str], int] | None = None,
    ) -> None:
        self.settings = settings or IncidentSettings()
        self.site_size = site_size
        self._open: dict[str, _Open] = {}
        #: device_id -> id of the open incident it belongs to.
        self._by_device: dict[str, str] = {}
        #: alert_id -> highest version accounted for (alerts of open incidents).
        self._seen: dict[str, int] = {}
        #: alert ids of resolved incidents (oldest first, bounded).
        self._closed: OrderedDict[str, None] = OrderedDict()
        #: site -> devices seen alerting (the fallback of ``site_size``).
        self._devices: dict[str, set[str]] = {}
        self._now = 0

    # -- reading ---------------------------------------------------------------

    def open_incidents(self) -> list[Incident]:
        """Every open incident (its latest state)."""
        return [entry.incident for entry in self._open.values()]

    def incident_of(self, device_id: str) -> Incident | None:
        """The open incident the device belongs to, if any."""
        iid = self._by_device.get(device_id)
        return self._open[iid].incident if iid is not None else None

    # -- restart ---------------------------------------------------------------

    def restore(self, incidents: Iterable[Incident], alerts: Iterable[Alert]) -> None:
        """Load stored incidents (open ones, and recently resolved ones) and the
        alerts they list, after a restart; a change already accounted for is
        skipped when it is read again."""
        by_id = {a.alert_id: a for a in alerts}
        # Resolved ones first: the alerts of a device incident folded into a
        # site incident belong to the open site incident.
        for inc in sorted(incidents, key=lambda i: (i.status is IncidentStatus.OPEN, i.opened_at)):
            if inc.status is IncidentStatus.RESOLVED:
                for aid in inc.alert_ids:
                    self._close_alert(aid)
                continue
            for aid in inc.alert_ids:
                self._closed.pop(aid, None)
            entry = _Open(inc, peak=severity_rank(inc.peak_severity or inc.severity))
            for aid in inc.alert_ids:
                alert = by_id.get(aid)
                if alert is not None:
                    entry.alerts[aid] = alert
                    self._seen[aid] = alert.version
                    self._now = max(self._now, alert.updated_at)
            # Members the document no longer lists (pruned, all resolved).
            entry.pruned = max(0, inc.alert_count - len(entry.alerts))
            if entry.pruned:
                entry.pruned_rank = entry.peak
                entry.pruned_rules = set(inc.rules)
                entry.pruned_devices = dict.fromkeys(inc.device_ids)
            if not any(a.status is AlertStatus.OPEN for a in entry.alerts.values()):
                ends = [a.updated_at for a in entry.alerts.values()] or [inc.updated_at]
                entry.idle_since = max(ends)
            self._open[inc.incident_id] = entry
            for device in (*inc.device_ids, *(a.device_id for a in entry.alerts.values())):
                self._by_device[device] = inc.incident_id
                self._devices.setdefault(inc.site, set()).add(device)

    # -- the transitions -------------------------------------------------------

    def apply(self, change: AlertChange) -> list[IncidentChange]:
        """Apply one alert change; return the incident changes it causes (often none)."""
        alert = change.alert
        out = self.expire(max(self._now, alert.updated_at))
        if alert.severity is Severity.INFO and alert.alert_id not in self._seen:
            return out  # informational (an announced shutdown): no incident
        if alert.alert_id in self._closed or self._seen.get(alert.alert_id, 0) >= alert.version:
            return out  # accounted for already (read again after a restart)
        self._seen[alert.alert_id] = alert.version
        self._devices.setdefault(alert.site, set()).add(alert.device_id)
        iid = self._by_device.get(alert.device_id)
        if iid is None:
            if alert.status is AlertStatus.OPEN:
                out += self._open_device(alert, change.notify)
            else:
                self._seen.pop(alert.alert_id, None)  # resolved with no incident: nothing
            return out
        out += self._join(self._open[iid], alert, change.notify)
        return out

    def expire(self, now_ms: int) -> list[IncidentChange]:
        """Resolve the incidents whose grace has passed by ``now_ms`` (event time)."""
        self._now = max(self._now, now_ms)
        grace = int(self.settings.resolve_grace_s * 1000)
        due = [
            entry
            for entry in self._open.values()
            if entry.idle_since is not None and self._now - entry.idle_since >= grace
        ]
        out: list[IncidentChange] = []
        for entry in sorted(due, key=lambda e: (e.idle_since or 0, e.incident.incident_id)):
            end = entry.idle_since or entry.incident.updated_at
            notify = bool(entry.incident.notified)  # nobody heard of it: nothing to say
            out.append(self._close(entry, end, notify, ""))
        return out

    def _open_device(self, alert: Alert, notify: bool) -> list[IncidentChange]:
        site_iid = self._site_incident(alert.site, alert.updated_at)
        if site_iid is not None:
            return self._join(self._open[site_iid], alert, notify)
        iid = incident_id_for(IncidentScope.DEVICE, alert.site, alert.alert_id)
        incident = Incident(
            incident_id=iid,
            scope=IncidentScope.DEVICE,
            site=alert.site,
            device_ids=(alert.device_id,),
            severity=alert.severity,
            status=IncidentStatus.OPEN,
            version=0,
            opened_at=alert.opened_at,
            updated_at=alert.updated_at,
        )
        entry = _Open(incident, {alert.alert_id: alert}, peak=severity_rank(alert.severity))
        self._open[iid] = entry
        self._by_device[alert.device_id] = iid
        # The device that makes most of its site fire opens the site incident:
        # its own opening is not news then.
        tell = notify and not self._folds(
            len(self._recent(alert.site, alert.updated_at)), alert.site
        )
        kind = IncidentChangeKind.OPENED
        out = [self._next(entry, kind, tell, message=alert.message, late=not notify)]
        return out + self._fold(alert.site, alert.updated_at)

    def _join(self, entry: _Open, alert: Alert, notify: bool) -> list[IncidentChange]:
        before = entry.incident
        entry.alerts[alert.alert_id] = alert
        self._by_device[alert.device_id] = before.incident_id
        active = [a for a in entry.alerts.values() if a.status is AlertStatus.OPEN]
        entry.idle_since = None if active else alert.updated_at
        severity = _max_severity(active) if active else before.severity
        rose = severity_rank(severity) > entry.peak
        entry.peak = max(entry.peak, severity_rank(severity))
        if notify and not before.notified and alert.status is AlertStatus.OPEN:
            # Recorded from late alerts so far; a live alert makes it news now.
            kind, tell = IncidentChangeKind.OPENED, True
        elif rose:
            kind, tell = IncidentChangeKind.ESCALATED, notify
        else:
            kind, tell = IncidentChangeKind.UPDATED, False
        message = alert.message if alert.status is AlertStatus.OPEN else before.message
        change = self._next(entry, kind, tell, severity=severity, message=message)
        if kind is IncidentChangeKind.UPDATED and _same(before, change.incident):
            entry.incident = before  # nothing an operator would see changed: no document
            return []
        return [change]

    def _close(self, entry: _Open, end: int, notify: bool, message: str) -> IncidentChange:
        kind = IncidentChangeKind.RESOLVED
        # Of all its alerts, once resolved (pruned ones included).
        rank = max(severity_rank(_max_severity(entry.alerts.values())), entry.pruned_rank)
        severity = _BY_RANK[rank]
        change = self._next(
            entry, kind, notify, severity=severity, status=IncidentStatus.RESOLVED, end=end
        )
        if message:
            change = IncidentChange(
                kind, replace(change.incident, message=message), notify=change.notify
            )
        iid = entry.incident.incident_id
        del self._open[iid]
        for device in [d for d, i in self._by_device.items() if i == iid]:
            del self._by_device[device]
        for aid in entry.alerts:
            self._seen.pop(aid, None)
            self._close_alert(aid)
        return change

    def _close_alert(self, alert_id: str) -> None:
        self._closed[alert_id] = None
        self._closed.move_to_end(alert_id)
        while len(self._closed) > MAX_CLOSED_ALERTS:
            self._closed.popitem(last=False)

    # -- site grouping -----------------------------------------------------------

    def _site_incident(self, site: str, ts: int) -> str | None:
        """The open site incident of ``site`` still young enough to take a device."""
        window = int(self.settings.site_window_s * 1000)
        for iid, entry in self._open.items():
            inc = entry.incident
            if (
                inc.scope is IncidentScope.SITE
                and inc.site == site
                and ts - inc.opened_at <= window
            ):
                return iid
        return None

    def _site_devices(self, site: str) -> int:
        seen = len(self._devices.get(site, ()))
        return max(self.site_size(site), seen) if self.site_size is not None else seen

    def _recent(self, site: str, ts: int) -> list[_Open]:
        """The site's device incidents opened within the window and still active."""
        window = int(self.settings.site_window_s * 1000)
        return [
            e
            for e in self._open.values()
            if e.incident.scope is IncidentScope.DEVICE
            and e.incident.site == site
            and ts - e.incident.opened_at <= window
            and e.idle_since is None
        ]

    def _folds(self, count: int, site: str) -> bool:
        """Whether ``count`` device incidents make most of the site."""
        s = self.settings
        return count >= s.site_min_devices and count >= s.site_fraction * self._site_devices(site)

    def _fold(self, site: str, ts: int) -> list[IncidentChange]:
        """Fold the site's recent device incidents into one site incident when most
        of its devices have one."""
        recent = self._recent(site, ts)
        if not self._folds(len(recent), site):
            return []
        recent.sort(key=lambda e: (e.incident.opened_at, e.incident.incident_id))
        first = min(recent[0].alerts.values(), key=lambda a: (a.opened_at, a.alert_id))
        iid = incident_id_for(IncidentScope.SITE, site, first.alert_id)
        members: dict[str, Alert] = {}
        for e in recent:
            members.update(e.alerts)
        notify = any(not e.incident.late for e in recent)
        site_entry = _Open(
            Incident(
                incident_id=iid,
                scope=IncidentScope.SITE,
                site=site,
                device_ids=(),
                severity=Severity.INFO,
                status=IncidentStatus.OPEN,
                version=0,
                opened_at=recent[0].incident.opened_at,
                updated_at=ts,
            ),
            members,
        )
        for e in recent:
            site_entry.absorb(e)
        # Whoever heard of a device incident hears that it ended (as expire() does).
        out = [self._close(e, ts, bool(e.incident.notified), f"folded into {iid}") for e in recent]
        self._open[iid] = site_entry
        for a in members.values():
            self._by_device[a.device_id] = iid
            self._seen[a.alert_id] = a.version
            self._closed.pop(a.alert_id, None)
        active = [a for a in members.values() if a.status is AlertStatus.OPEN]
        severity = _max_severity(active or list(members.values()))
        site_entry.peak = severity_rank(severity)
        message = f"{len(recent)} of {self._site_devices(site)} devices of site {site}"
        kind = IncidentChangeKind.OPENED
        out.append(self._next(site_entry, kind, notify, severity=severity, message=message))
        return out

    # -- the document ------------------------------------------------------------

    def _next(
        self,
        entry: _Open,
        kind: IncidentChangeKind,
        notify: bool,
        *,
        severity: Severity | None = None,
        status: IncidentStatus = IncidentStatus.OPEN,
        message: str | None = None,
        end: int | None = None,
        late: bool | None = None,
    ) -> IncidentChange:
        """The next version of ``entry``'s incident after ``kind``, from its alerts."""
        before = entry.incident
        for aid in entry.prune():
            self._seen.pop(aid, None)
            self._close_alert(aid)  # a change of it read again is stale
        alerts = sorted(entry.alerts.values(), key=lambda a: (a.opened_at, a.alert_id))
        active = [a for a in alerts if a.status is AlertStatus.OPEN]
        devices = list(dict.fromkeys([*(a.device_id for a in alerts), *entry.pruned_devices]))
        rules = sorted({a.rule for a in alerts} | entry.pruned_rules)
        # The document lists the active alerts first (a restart must find them).
        listed = [*active, *(a for a in alerts if a.status is not AlertStatus.OPEN)]
        listed = sorted(listed[:MAX_INCIDENT_ALERTS], key=lambda a: (a.opened_at, a.alert_id))
        updated = max([before.updated_at, *(a.updated_at for a in alerts)])
        if end is not None:
            updated = max(updated, end)
        notified = before.notified + ((kind,) if notify else ())
        incident = replace(
            before,
            device_ids=tuple(devices[:MAX_INCIDENT_DEVICES]),
            device_count=len(devices),
            severity=severity if severity is not None else before.severity,
            status=status,
            version=before.version + 1,
            updated_at=updated,
            resolved_at=updated if status is IncidentStatus.RESOLVED else None,
            rules=tuple(rules[:MAX_INCIDENT_RULES]),
            alert_ids=tuple(a.alert_id for a in listed),
            alert_count=len(alerts) + entry.pruned,
            active_alerts=len(active),
            title=_title(before.scope, before.site, devices, rules),
            message=(message if message is not None else before.message)[:4096],
            late=before.late if late is None else late,
            notified=notified[-64:],
        )
        if notify and incident.late:
            incident = replace(incident, late=False)
        peak = max(entry.peak, severity_rank(incident.severity))
        incident = replace(incident, peak_severity=_BY_RANK[peak])
        entry.incident = incident
        return IncidentChange(kind, incident, notify=notify)


def _same(a: Incident, b: Incident) -> bool:
    """The same incident for an operator: severity, members, rules, active count."""
    return (a.severity, a.alert_ids, a.alert_count, a.rules, a.active_alerts, a.device_ids) == (
        b.severity,
        b.alert_ids,
        b.alert_count,
        b.rules,
        b.active_alerts,
        b.device_ids,
    )


def _max_severity(alerts: Iterable[Alert]) -> Severity:
    return max((a.severity for a in alerts), key=severity_rank, default=Severity.INFO)


def _title(scope: IncidentScope, site: str, devices: list[str], rules: list[str]) -> str:
    """One line: where and which rules.

    >>> _title(IncidentScope.SITE, "s1", ["a", "b", "c"], ["device_offline"])
    'site s1: 3 devices (device_offline)'
    """
    names = ", ".join(rules)
    if scope is IncidentScope.SITE:
        text = f"site {site}: {len(devices)} devices ({names})"
    else:
        text = f"{devices[0] if devices else site}: {names}"
    return text if len(text) <= 256 else text[:255] + "…"
