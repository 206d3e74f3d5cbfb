"""The incident contract: alerts grouped into one incident, its changes, and the wire message.

One door left open raises several alerts on one device (``edge_anomaly``,
``threshold_high``, ``fleet_outlier``, ``rate_of_change``); a power cut raises
one per device of a site. The processor groups them into one :class:`Incident`
(scope ``device`` or ``site``) with the highest severity of its active alerts,
and notifies its changes instead of each alert. An :class:`IncidentChange` is
one transition: ``opened``, ``escalated`` (severity rose), ``updated`` (an
alert joined or resolved, no news), ``resolved``; ``notify`` says whether it
is sent.

``incident_id`` is derived from the opening alert (:func:`incident_id_for`),
so replaying the same alert changes yields the same id; ``version`` counts the
incident's changes, so (incident_id, version) names one change exactly.

On the wire (the ``<prefix>-incidents`` index document and the webhook's JSON
body) a change is one flat JSON object like an ``alert_change``: the
incident's fields, ``@timestamp`` (the opening time), ``change`` and
``notify``, tagged ``"type": "incident_change"``.

>>> inc = Incident(incident_id_for(IncidentScope.DEVICE, "s1", "d1.threshold_high.1"),
...                IncidentScope.DEVICE, "s1", ("d1",), Severity.CRITICAL,
...                IncidentStatus.OPEN, 1, 1, 1, rules=("threshold_high",),
...                alert_ids=("d1.threshold_high.1",), title="d1: threshold_high")
>>> inc.incident_id
'device.d1.threshold_high.1'
>>> wire = encode_incident_change(IncidentChange(IncidentChangeKind.OPENED, inc))
>>> wire[:45]
b'{"type":"incident_change","schema_version":1,'
>>> c = decode_incident_change(wire)
>>> c.kind, c.incident == inc, c.notify
(<IncidentChangeKind.OPENED: 'opened'>, True, True)
>>> decode_incident_change(b'{"type": "incident_change", "incident_id": "x"}')
Traceback (most recent call last):
...
telemetry_contract.errors.ContractError: scope: required field is missing
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final

import msgspec

from telemetry_contract.codec import decode_flat_change, flat_change_doc
from telemetry_contract.messages import DEVICE_ID_PATTERN, SchemaVersion, Severity

__all__ = [
    "MAX_INCIDENT_ALERTS",
    "MAX_INCIDENT_CHANGE_BYTES",
    "MAX_INCIDENT_DEVICES",
    "MAX_INCIDENT_RULES",
    "Incident",
    "IncidentChange",
    "IncidentChangeKind",
    "IncidentChangeMessage",
    "IncidentScope",
    "IncidentStatus",
    "decode_incident_change",
    "encode_incident_change",
    "incident_change_doc",
    "incident_fields",
    "incident_id_for",
]

#: Bounds of an incident's lists: a site-wide incident on a large site keeps
#: the first devices and alerts it saw and counts the rest (``device_count``,
#: ``alert_count``), so one document stays small.
MAX_INCIDENT_DEVICES: Final = 64
MAX_INCIDENT_ALERTS: Final = 128
MAX_INCIDENT_RULES: Final = 32
#: Largest incident change decoded: 128 alert ids of up to 512 characters,
#: 64 device ids, and two texts of 4,096 characters.
MAX_INCIDENT_CHANGE_BYTES: Final = 256 * 1024

TimeMs = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
DeviceId = Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
AlertId = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
RuleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class IncidentScope(enum.StrEnum):
    """What an incident groups: one device's alerts, or a site's (most devices at once)."""

    DEVICE = "device"
    SITE = "site"


class IncidentStatus(enum.StrEnum):
    """Lifecycle state of an incident."""

    OPEN = "open"
    RESOLVED = "resolved"


class IncidentChangeKind(enum.StrEnum):
    """What happened to an incident; ``opened``, ``escalated`` and ``resolved`` are news."""

    OPENED = "opened"
    ESCALATED = "escalated"
    UPDATED = "updated"
    RESOLVED = "resolved"


class Incident(msgspec.Struct, frozen=True):
    """One incident after its latest change (one incidents-index document).

    ``severity`` is the highest severity of its active alerts (of all its
    alerts once resolved); ``rules`` are the contributing rules, sorted;
    ``device_ids`` keeps the first ones seen and ``alert_ids`` (in opening
    order) its active alerts before any resolved one (both bounded), while
    ``device_count`` and ``alert_count`` count them all.
    """

    incident_id: Annotated[str, msgspec.Meta(min_length=1, max_length=600)]
    scope: IncidentScope
    site: Annotated[str, msgspec.Meta(max_length=64)]
    device_ids: Annotated[tuple[DeviceId, ...], msgspec.Meta(max_length=MAX_INCIDENT_DEVICES)]
    severity: Severity
    status: IncidentStatus
    version: Annotated[int, msgspec.Meta(ge=1)]
    opened_at: TimeMs
    updated_at: TimeMs
    resolved_at: TimeMs | None = None
    rules: Annotated[tuple[RuleName, ...], msgspec.Meta(max_length=MAX_INCIDENT_RULES)] = ()
    alert_ids: Annotated[tuple[AlertId, ...], msgspec.Meta(max_length=MAX_INCIDENT_ALERTS)] = ()
    device_count: Count = 1
    alert_count: Count = 1
    #: Alerts of the incident still open (0 once resolved).
    active_alerts: Count = 0
    title: Annotated[str, msgspec.Meta(max_length=256)] = ""
    message: Text = ""
    #: Every alert of it was late (a backlog): recorded, never notified.
    late: bool = False
    #: The highest severity it has had (``escalated`` is a rise above it; a
    #: severity that drops and comes back is not news again).
    peak_severity: Severity | None = None
    #: The kinds of its notified changes so far, in order, this one included
    #: (``opened``, then any ``escalated``, then ``resolved``).
    notified: Annotated[tuple[IncidentChangeKind, ...], msgspec.Meta(max_length=64)] = ()


class IncidentChange(msgspec.Struct, frozen=True):
    """One incident transition; ``notify`` is False for updates and late changes."""

    kind: IncidentChangeKind
    incident: Incident
    notify: bool = True


class IncidentChangeMessage(
    Incident,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="incident_change",
    forbid_unknown_fields=True,
):
    """An incident change on the wire: the incident's fields, flat, plus the change."""

    schema_version: SchemaVersion = 1
    timestamp: TimeMs | None = msgspec.field(default=None, name="@timestamp")
    change: IncidentChangeKind
    notify: bool = True


_INCIDENT_FIELDS: Final = Incident.__struct_fields__
_CHANGE_KEYS: Final = frozenset({"type", "schema_version", "change", "notify"})
_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(IncidentChangeMessage)


def incident_id_for(scope: IncidentScope, site: str, opening_alert_id: str) -> str:
    """The incident id, from its scope and opening alert: a replay gives the same id.

    >>> incident_id_for(IncidentScope.SITE, "s1", "d1.device_offline.5")
    'site.s1.d1.device_offline.5'
    """
    if scope is IncidentScope.SITE:
        return f"site.{site}.{opening_alert_id}"
    return f"device.{opening_alert_id}"


def incident_fields(incident: Incident) -> dict[str, Any]:
    """The incident's fields as plain data, ``@timestamp`` first (the incidents-index shape)."""
    doc = flat_change_doc("", incident.opened_at, incident, "", False)
    return {k: v for k, v in doc.items() if k not in _CHANGE_KEYS}


def incident_change_doc(change: IncidentChange) -> dict[str, Any]:
    """The wire form of a change as plain data (the webhook's JSON body, the index document)."""
    inc = change.incident
    return flat_change_doc("incident_change", inc.opened_at, inc, change.kind.value, change.notify)


def encode_incident_change(change: IncidentChange) -> bytes:
    """The wire form of a change as compact JSON."""
    return _ENCODER.encode(incident_change_doc(change))


def decode_incident_change(
    payload: bytes | str, *, max_bytes: int = MAX_INCIDENT_CHANGE_BYTES
) -> IncidentChange:
    """Decode and validate one incident change; :class:`ContractError` names the field.

    Like :func:`~telemetry_contract.decode_alert_change`, it returns or raises
    :class:`ContractError` for any input, the size (``max_bytes``) checked first.
    """
    msg, fields = decode_flat_change(
        _DECODER, IncidentChangeMessage, payload, max_bytes, _INCIDENT_FIELDS
    )
    return IncidentChange(msg.change, Incident(**fields), msg.notify)
