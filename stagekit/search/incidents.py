"""The incidents-index document of an :class:`~telemetry_contract.IncidentChange`, and back.

The processor's webhook feed writes one document per incident (``_id`` is
``incident_id``), replaced by each change: the contract's flat wire form
(:func:`telemetry_contract.incident_change_doc`) plus ``processed_at``. The
web view and the demo's accounting read them.

>>> from telemetry_contract import (Incident, IncidentChange, IncidentChangeKind,
...     IncidentScope, IncidentStatus, Severity)
>>> inc = Incident("device.d.r.1", IncidentScope.DEVICE, "s", ("d",), Severity.WARNING,
...                IncidentStatus.OPEN, 1, 1, 1, rules=("r",))
>>> doc = incident_doc(IncidentChange(IncidentChangeKind.OPENED, inc), processed_at=5)
>>> doc["processed_at"], doc["change"]
(5, 'opened')
>>> incident_from_doc(doc).incident == inc
True
"""

from __future__ import annotations

from typing import Any

import msgspec

from telemetry_contract import IncidentChange, decode_incident_change, incident_change_doc

__all__ = ["incident_doc", "incident_from_doc"]

_ENC = msgspec.json.Encoder()


def incident_doc(change: IncidentChange, *, processed_at: int | None = None) -> dict[str, Any]:
    """The incidents-index document of a change (fields of
    :data:`~stagekit.search.indices.INCIDENTS`)."""
    doc = incident_change_doc(change)
    if processed_at is not None:
        doc["processed_at"] = processed_at
    return doc


def incident_from_doc(doc: dict[str, Any]) -> IncidentChange:
    """Inverse of :func:`incident_doc` (state rebuild after a restart); raises
    :class:`~telemetry_contract.ContractError` naming the field of a bad document."""
    fields = {k: v for k, v in doc.items() if k != "processed_at"}
    return decode_incident_change(_ENC.encode(fields))
