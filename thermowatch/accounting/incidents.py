"""Incidents and their notifications, counted against the scripted incidents.

:func:`count_notifications` matches each injected incident (ground truth)
with the processor's incidents of the same device that were open while it was
on (plus a grace period) and counts their notified changes (the ``notified``
field of each incident document: ``opened``, ``escalated``, ``resolved``);
:func:`shutdown_alerts` counts, by severity, the alerts opened once the fleet
was stopped (its own announced shutdown: informational, never critical).
Pure functions of documents the sources fetched
(:func:`thermowatch.accounting.search.fetch_incidents`).

>>> from telemetry_contract import (Incident as Inc, IncidentScope, IncidentStatus,
...     Severity)
>>> door = Inc("device.d1.edge_anomaly.1000", IncidentScope.DEVICE, "s1", ("d1",),
...            Severity.CRITICAL, IncidentStatus.RESOLVED, 5, 1000, 9000, 9000,
...            notified=("opened", "escalated", "resolved"))
>>> (n,) = count_notifications([Incident("door_open", "d1", 500, 8000)], [door])
>>> n.incident_ids, n.opened, n.escalated, n.resolved, n.total
(('device.d1.edge_anomaly.1000',), 1, 1, 1, 3)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from telemetry_contract import Incident as ProcessorIncident
from thermowatch.accounting.alerts import AlertDoc, Incident

__all__ = ["Notifications", "count_notifications", "shutdown_alerts"]


@dataclass(frozen=True, slots=True)
class Notifications:
    """The processor's incidents matched to one injected incident, and their notifications."""

    kind: str
    device_id: str
    incident_ids: tuple[str, ...]
    opened: int
    escalated: int
    resolved: int

    @property
    def total(self) -> int:
        """Notifications sent for this injected incident."""
        return self.opened + self.escalated + self.resolved

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (the demo summary's ``notifications`` rows)."""
        return {
            "kind": self.kind,
            "device_id": self.device_id,
            "incident_ids": list(self.incident_ids),
            "opened": self.opened,
            "escalated": self.escalated,
            "resolved": self.resolved,
        }


def count_notifications(
    injected: Sequence[Incident],
    incidents: Iterable[ProcessorIncident],
    *,
    grace_ms: int = 60_000,
) -> list[Notifications]:
    """Per injected incident: the processor's incidents of its device open at
    some time between its start and its end + ``grace_ms``, and their notified
    changes."""
    mine = sorted(incidents, key=lambda i: (i.opened_at, i.incident_id))
    out: list[Notifications] = []
    for inj in injected:
        until = inj.end_ms + grace_ms
        matched = [i for i in mine if inj.device_id in i.device_ids and _overlaps(i, inj, until)]
        kinds = Counter(str(k) for i in matched for k in i.notified)
        out.append(
            Notifications(
                inj.kind,
                inj.device_id,
                tuple(i.incident_id for i in matched),
                kinds["opened"],
                kinds["escalated"],
                kinds["resolved"],
            )
        )
    return out


def _overlaps(incident: ProcessorIncident, injected: Incident, until_ms: int) -> bool:
    """Open at some time between the injected start and ``until_ms`` (an offline
    incident opens at the last will's event time: when the agent connected)."""
    ended = incident.resolved_at
    return incident.opened_at <= until_ms and (ended is None or ended >= injected.start_ms)


def shutdown_alerts(alerts: Iterable[AlertDoc], since_ms: int) -> dict[str, int]:
    """Alerts opened (event time) at or after ``since_ms``, by severity.

    >>> shutdown_alerts([AlertDoc("a", "d", "device_offline", 10, severity="info"),
    ...                  AlertDoc("b", "d", "threshold_high", 5)], since_ms=10)
    {'info': 1}
    """
    return dict(sorted(Counter(a.severity for a in alerts if a.opened_at >= since_ms).items()))
