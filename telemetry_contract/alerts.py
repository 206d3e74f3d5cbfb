"""The alert contract: an alert, its changes, and the change message on the wire.

The processor owns alerts; the web view, accounting, the demo, webhook
receivers and Kibana read them. An :class:`Alert` is one alert lifecycle as it
stands after a change (one document in the alerts index); an
:class:`AlertChange` is one transition of it (``opened``, ``updated``,
``resolved``) and whether it is notified.

On the wire (the ``<prefix>.alerts`` Kafka topic and the webhook's JSON body)
a change is one flat JSON object: the alert's fields, ``@timestamp`` (the
opening time, as in the alerts index), ``change`` and ``notify``, tagged
``"type": "alert_change"``. It is flat on purpose: the alerts-index document
has the same fields, so one reader handles a change and a stored alert alike.
Decoders accept a change without ``type``/``schema_version`` (written before
they were added).

>>> a = Alert("d1.threshold_high.1767225600000", "d1", "s1", Rule.THRESHOLD_HIGH,
...           Severity.CRITICAL, AlertStatus.OPEN, 1, 1_767_225_600_000, 1_767_225_600_000,
...           value=9.5, message="temp_c 9.5 >= 8.0")
>>> wire = encode_alert_change(AlertChange(ChangeKind.OPENED, a))
>>> wire[:42]
b'{"type":"alert_change","schema_version":1,'
>>> c = decode_alert_change(wire)
>>> c.kind, c.alert == a, c.notify
(<ChangeKind.OPENED: 'opened'>, True, True)
>>> decode_alert_change(b'{"alert_id": "x"}')
Traceback (most recent call last):
...
telemetry_contract.errors.ContractError: device_id: required field is missing
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final

import msgspec

from telemetry_contract.codec import decode_flat_change, flat_change_doc
from telemetry_contract.messages import (
    DEVICE_ID_PATTERN,
    SENSOR_ID_PATTERN,
    SchemaVersion,
    Severity,
)

__all__ = [
    "MAX_ALERT_CHANGE_BYTES",
    "Alert",
    "AlertChange",
    "AlertChangeMessage",
    "AlertStatus",
    "ChangeKind",
    "Rule",
    "alert_change_doc",
    "alert_fields",
    "decode_alert_change",
    "encode_alert_change",
]


class Rule(enum.StrEnum):
    """The rules that raise alerts (an alert's ``rule``)."""

    THRESHOLD_HIGH = "threshold_high"
    THRESHOLD_LOW = "threshold_low"
    RATE_OF_CHANGE = "rate_of_change"
    STALE = "stale_sensor"
    OFFLINE = "device_offline"
    OUTLIER = "fleet_outlier"
    EDGE_ANOMALY = "edge_anomaly"
    EDGE_THRESHOLD = "edge_threshold"
    EDGE_SENSOR_FAULT = "edge_sensor_fault"
    EDGE_CONFIG_REJECTED = "edge_config_rejected"
    FAULT_STORM = "sensor_fault_storm"
    DATA_GAP = "data_gap"


class AlertStatus(enum.StrEnum):
    """Lifecycle state of an alert."""

    OPEN = "open"
    RESOLVED = "resolved"


class ChangeKind(enum.StrEnum):
    """What happened to an alert."""

    OPENED = "opened"
    UPDATED = "updated"
    RESOLVED = "resolved"


#: Largest alert change decoded: its texts (message, clear_reason) may take
#: 4,096 characters each, up to 4 bytes apiece.
MAX_ALERT_CHANGE_BYTES: Final = 64 * 1024

TimeMs = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]


class Alert(msgspec.Struct, frozen=True):
    """One alert lifecycle after its latest change (one alerts-index document).

    ``alert_id`` is ``<device_id>.<rule>.<opening event time>``, so replaying
    the same records yields the same id; ``version`` counts its changes.
    ``rule`` is a string: a reader must not fail on a rule added later.
    """

    alert_id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    device_id: Annotated[str, msgspec.Meta(pattern=DEVICE_ID_PATTERN)]
    site: Annotated[str, msgspec.Meta(max_length=64)]
    rule: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    severity: Severity
    status: AlertStatus
    version: Annotated[int, msgspec.Meta(ge=1)]
    opened_at: TimeMs
    updated_at: TimeMs
    resolved_at: TimeMs | None = None
    value: float | None = None
    threshold: float | None = None
    score: float | None = None
    message: Text = ""
    clear_reason: Text | None = None
    late: bool = False
    flapping: bool = False
    sensor_id: Annotated[str, msgspec.Meta(pattern=SENSOR_ID_PATTERN)] | None = None
    #: An edge alert that cloud evidence (an active cloud rule on the same
    #: device) confirmed: its severity was raised a level.
    confirmed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(device_id, rule): at most one active alert per key."""
        return (self.device_id, self.rule)


class AlertChange(msgspec.Struct, frozen=True):
    """One alert transition; ``notify`` is False for late or suppressed ones."""

    kind: ChangeKind
    alert: Alert
    notify: bool = True


class AlertChangeMessage(
    Alert,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="alert_change",
    forbid_unknown_fields=True,
):
    """An alert change on the wire: the alert's fields, flat, plus the change."""

    schema_version: SchemaVersion = 1
    timestamp: TimeMs | None = msgspec.field(default=None, name="@timestamp")
    change: ChangeKind
    notify: bool = True


_ALERT_FIELDS: Final = Alert.__struct_fields__
_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(AlertChangeMessage)


def alert_fields(alert: Alert) -> dict[str, Any]:
    """The alert's fields as plain data, ``@timestamp`` first (the alerts-index shape).

    >>> a = Alert("d.stale_sensor.1", "d", "s", "stale_sensor", Severity.WARNING,
    ...           AlertStatus.OPEN, 1, 1, 1)
    >>> list(alert_fields(a))[:3]
    ['@timestamp', 'alert_id', 'device_id']
    """
    out: dict[str, Any] = {"@timestamp": alert.opened_at}
    out.update(msgspec.to_builtins(alert))
    return out


def alert_change_doc(change: AlertChange) -> dict[str, Any]:
    """The wire form of a change as plain data (the webhook's JSON body)."""
    a = change.alert
    return flat_change_doc("alert_change", a.opened_at, a, change.kind.value, change.notify)


def encode_alert_change(change: AlertChange) -> bytes:
    """The wire form of a change as compact JSON (the alerts topic's record value)."""
    return _ENCODER.encode(alert_change_doc(change))


def decode_alert_change(
    payload: bytes | str, *, max_bytes: int = MAX_ALERT_CHANGE_BYTES
) -> AlertChange:
    """Decode and validate one alert change; :class:`ContractError` names the field.

    Like :func:`~telemetry_contract.decode`, it returns or raises
    :class:`ContractError` for any input, the size (``max_bytes``) checked first.
    """
    msg, fields = decode_flat_change(
        _DECODER, AlertChangeMessage, payload, max_bytes, _ALERT_FIELDS
    )
    return AlertChange(msg.change, Alert(**fields), msg.notify)
