"""The web view's alerts: an alert as the page shows it.

The processor's :class:`~telemetry_contract.Alert` (changes decoded with
:func:`~telemetry_contract.decode_alert_change`, documents read with
:func:`stagekit.search.alerts.alert_from_doc`) plus ``acknowledged``, which
``processor ack`` writes into the alerts-index document only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagekit.search.alerts import alert_from_doc
from telemetry_contract import Alert, AlertStatus

__all__ = ["AlertView"]


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as the page shows it: the contract's alert, and whether it was acknowledged.

    ``acknowledged`` is not part of the alert: ``processor ack`` writes it
    into the alerts-index document only.
    """

    alert: Alert
    acknowledged: bool = False

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> AlertView | None:
        """An alerts-index document or an alert change as data; None if it is not an alert.

        Read with :func:`stagekit.search.alerts.alert_from_doc` (a change has
        the same fields, plus ``change`` and ``notify``).

        >>> AlertView.from_doc({"alert_id": "x"}) is None
        True
        >>> a = AlertView.from_doc({"alert_id": "d.stale_sensor.1", "device_id": "d",
        ...     "site": "s", "rule": "stale_sensor", "severity": "warning", "status": "open",
        ...     "version": 1, "opened_at": 1, "updated_at": 1, "change": "opened"})
        >>> a.alert.rule, a.alert.status.value, a.acknowledged
        ('stale_sensor', 'open', False)
        """
        try:
            alert = alert_from_doc(dict(doc))
        except (KeyError, TypeError, ValueError):
            return None
        return cls(alert, bool(doc.get("acknowledged", False)))

    @property
    def is_open(self) -> bool:
        """Whether the alert is still open."""
        return self.alert.status is AlertStatus.OPEN

    def to_json(
        self, incident_id: str | None = None, *, informational: bool = False
    ) -> dict[str, Any]:
        """JSON-ready dictionary: the page's alert row, with the open incident it belongs
        to and whether it is informational (listed apart: nothing to act on)."""
        a = self.alert
        return {
            "incident_id": incident_id,
            "informational": informational,
            "alert_id": a.alert_id,
            "device_id": a.device_id,
            "site": a.site,
            "rule": a.rule,
            "severity": a.severity.value,
            "version": a.version,
            "opened_at": a.opened_at,
            "updated_at": a.updated_at,
            "message": a.message,
            "value": a.value,
            "threshold": a.threshold,
            "flapping": a.flapping,
            "late": a.late,
            "acknowledged": self.acknowledged,
        }
