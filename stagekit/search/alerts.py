"""The alerts-index document of an :class:`~telemetry_contract.Alert`, and back.

The processor writes these documents; the web view, accounting and the demo
read them (with ``acknowledged``, written by ``processor ack``, on top). The
fields are the contract's (:func:`telemetry_contract.alert_fields`), so a
stored alert and an alert change on the alerts topic read the same.
"""

from __future__ import annotations

from typing import Any

from telemetry_contract import Alert, AlertStatus, Severity, alert_fields

__all__ = ["alert_doc", "alert_from_doc"]

_CONFIRMED_BEFORE_THE_FIELD = "(confirmed by"


def alert_doc(
    a: Alert, location: tuple[float, float] | None = None, *, processed_at: int | None = None
) -> dict[str, Any]:
    """The alerts-index document of an alert (fields of :data:`~stagekit.search.indices.ALERTS`).

    ``acknowledged`` is not part of it: it is written by ``processor ack``
    and the processor's partial updates leave it alone.

    >>> from telemetry_contract import Severity
    >>> a = Alert("d.rule.1", "d", "s", "rule", Severity.WARNING, AlertStatus.OPEN, 1, 1, 1)
    >>> sorted(alert_doc(a))[:4]
    ['@timestamp', 'alert_id', 'clear_reason', 'confirmed']
    """
    doc = alert_fields(a)
    if processed_at is not None:
        doc["processed_at"] = processed_at
    if location is not None:
        doc["location"] = {"lat": location[0], "lon": location[1]}
    return doc


def alert_from_doc(doc: dict[str, Any]) -> Alert:
    """Inverse of :func:`alert_doc` (state rebuild after a restart)."""
    return Alert(
        alert_id=doc["alert_id"],
        device_id=doc["device_id"],
        site=doc["site"],
        rule=doc["rule"],
        severity=Severity(doc["severity"]),
        status=AlertStatus(doc["status"]),
        version=int(doc["version"]),
        opened_at=int(doc["opened_at"]),
        updated_at=int(doc["updated_at"]),
        resolved_at=doc.get("resolved_at"),
        value=doc.get("value"),
        threshold=doc.get("threshold"),
        score=doc.get("score"),
        message=doc.get("message", ""),
        clear_reason=doc.get("clear_reason"),
        late=bool(doc.get("late", False)),
        flapping=bool(doc.get("flapping", False)),
        sensor_id=doc.get("sensor_id"),
        # Documents written before ``confirmed`` was a field said it in the message.
        confirmed=bool(doc.get("confirmed", _CONFIRMED_BEFORE_THE_FIELD in doc.get("message", ""))),
    )
